import Foundation

/// The CPU time a Linux control group grants this process, as a whole number of cores: a CFS
/// quota, which is what `docker run --cpus`, a Kubernetes CPU limit and systemd's `CPUQuota=` set.
///
/// A quota does not show in the affinity mask: a container limited to 2 CPUs on a 64-core host
/// sees 64 CPUs in `sched_getaffinity`, and 64 workers would take turns on 2 CPUs' worth of time
/// while holding 64 workers' buffers (a 224×224 ingest's batch grows with its threads).
/// ``Parallel/defaultWorkers`` takes the smaller of the two.
///
/// Every hierarchy that limits CPU time is read, in the process's own group and in each ancestor
/// as far up as this process sees the hierarchy (a parent's limit bounds its children; a
/// container sees its own part, whose top carries the container's limit): cgroup v2's `cpu.max`
/// (`"max 100000"` or `"<quota> <period>"`) and cgroup v1's `cpu.cfs_quota_us` (`-1` for none)
/// over `cpu.cfs_period_us`. The tightest limit wins. `quota / period` is rounded up: 1.5 CPUs
/// let 2 threads run three-quarters of the time, which is more work than 1 thread does.
public enum CgroupCPULimit {
    /// The limit of this process, read once (a quota rarely changes while a command runs); `nil`
    /// when there is none or it cannot be read (another OS, no cgroup file system mounted).
    public static let current: Int? = cores(root: "")

    /// The limit read from `/proc/self/cgroup`, `/proc/self/mountinfo` and the control files, each
    /// path prefixed with `root` (a directory standing for `/`; `""` for the real files).
    public static func cores(root: String) -> Int? {
        // Bytes that are not UTF-8 (a mount point named in another encoding) become U+FFFD: such a
        // path is then not found, and only its limit is missed.
        func read(_ path: String) -> String? { FileManager.default.contents(atPath: root + path).map { String(decoding: $0, as: UTF8.self) } }
        guard let groups = read("/proc/self/cgroup"), let mounts = read("/proc/self/mountinfo") else { return nil }
        return cores(groups: groups, mounts: mounts, read: read)
    }

    /// The limit given the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`; `read` returns a
    /// control file's text (`nil` when it is absent).
    public static func cores(groups: String, mounts: String, read: (String) -> String?) -> Int? {
        var limits: [Int] = []
        for mount in mounts.split(separator: "\n").compactMap(Mount.init) {
            let group: Substring?
            switch mount.version {
            case .v2: group = membership(in: groups) { id, _ in id == "0" }
            case .v1: group = membership(in: groups) { _, controllers in controllers.split(separator: ",").contains("cpu") }
            }
            guard let group, let directories = mount.directories(of: group) else { continue }
            for directory in directories {
                if let limit = mount.version == .v2 ? v2Limit(read(directory + "/cpu.max"))
                                                    : v1Limit(quota: read(directory + "/cpu.cfs_quota_us"),
                                                              period: read(directory + "/cpu.cfs_period_us")) {
                    limits.append(limit)
                }
            }
        }
        return limits.min()
    }

    /// The group path of the `/proc/self/cgroup` line (`id:controllers:path`) that `matches`.
    private static func membership(in groups: String, _ matches: (Substring, Substring) -> Bool) -> Substring? {
        for line in groups.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            if fields.count == 3, matches(fields[0], fields[1]) { return fields[2] }
        }
        return nil
    }

    /// Whole cores for `quota` microseconds per `period`, rounded up.
    private static func wholeCores(quota: Int, period: Int) -> Int? {
        guard quota > 0, period > 0 else { return nil }
        return quota / period + (quota % period == 0 ? 0 : 1)
    }

    /// `cpu.max`: `max <period>` (no limit) or `<quota> <period>`.
    private static func v2Limit(_ text: String?) -> Int? {
        guard let fields = text?.split(whereSeparator: \.isWhitespace), fields.count == 2,
              let quota = Int(fields[0]), let period = Int(fields[1]) else { return nil }
        return wholeCores(quota: quota, period: period)
    }

    /// `cpu.cfs_quota_us` (`-1`: no limit) over `cpu.cfs_period_us`.
    private static func v1Limit(quota: String?, period: String?) -> Int? {
        guard let quota = quota.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
              let period = period.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else { return nil }
        return wholeCores(quota: quota, period: period)
    }

    /// A cgroup file system mount from `/proc/self/mountinfo`.
    private struct Mount {
        enum Version { case v1, v2 }
        let version: Version
        /// The directory of the hierarchy that is mounted (`/` unless a namespace or bind mount shows part of it).
        let root: String
        let mountPoint: String

        /// A mountinfo line: `id parent major:minor root mount-point options [optional fields] - type source super-options`;
        /// `nil` unless it is cgroup v2, or cgroup v1 with the `cpu` controller.
        init?(_ line: Substring) {
            // Single spaces; a field may be empty (the source of a mount made with an empty one).
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 5, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
            switch fields[dash + 1] {
            case "cgroup2": version = .v2
            case "cgroup" where dash + 3 < fields.count && fields[dash + 3].split(separator: ",").contains("cpu"): version = .v1
            default: return nil
            }
            root = Self.unescaped(fields[3])
            mountPoint = Self.unescaped(fields[4])
        }

        /// The directories of `group` and of each ancestor up to the mount's root, nearest
        /// first; `nil` when the group is not under the mounted part of the hierarchy.
        func directories(of group: Substring) -> [String]? {
            var path = String(group)
            if root != "/" {
                guard path == root || path.hasPrefix(root + "/") else { return nil }
                path.removeFirst(root.count)
            }
            var components = path.split(separator: "/")
            guard !components.contains("..") else { return nil }
            var directories: [String] = []
            while true {
                directories.append(components.isEmpty ? mountPoint : mountPoint + "/" + components.joined(separator: "/"))
                if components.isEmpty { break }
                components.removeLast()
            }
            return directories
        }

        /// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
        static func unescaped(_ field: Substring) -> String {
            guard field.contains("\\") else { return String(field) }
            var bytes: [UInt8] = []
            let utf8 = Array(field.utf8)
            var i = 0
            while i < utf8.count {
                let digits = utf8[min(i + 1, utf8.count)..<min(i + 4, utf8.count)]
                if utf8[i] == UInt8(ascii: "\\"), digits.count == 3, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) }),
                   let code = UInt8(String(decoding: digits, as: UTF8.self), radix: 8) {
                    bytes.append(code)
                    i += 4
                } else {
                    bytes.append(utf8[i])
                    i += 1
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}
