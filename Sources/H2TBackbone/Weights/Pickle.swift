/// A restricted pickle machine: it builds plain values from the opcodes a PyTorch state dict
/// uses and executes nothing.
///
/// Python's unpickler imports and calls whatever globals a pickle names, so loading an untrusted
/// checkpoint with it runs arbitrary code. This machine instead maps a short whitelist of globals
/// to built-in meanings (an ordered dict, "rebuild a tensor from a storage", storage element
/// types) and refuses every other global and every object-construction opcode before anything
/// is built from it.

/// A value on the pickle stack or in the memo.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    /// An integer too wide for Int64 (little-endian two's complement bytes, as in LONG1).
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(AllowedGlobal)
    case storage(StorageReference)
    case tensor(TensorReference)

    var typeName: String {
        switch self {
        case .none: "None"
        case .bool: "bool"
        case .int, .bigInt: "int"
        case .float: "float"
        case .string: "str"
        case .bytes: "bytes"
        case .tuple: "tuple"
        case .list: "list"
        case .dict: "dict"
        case .global(let g): "global \(g.qualifiedName)"
        case .storage: "storage"
        case .tensor: "tensor"
        }
    }
}

/// Lists and dicts are mutated after being memoized (EMPTY_LIST, BINPUT, APPENDS), so they
/// need reference semantics.
final class PickleList {
    var items: [PickleValue] = []
}

/// Every list and dict one checkpoint's pickles created. A hostile pickle can put a list inside
/// itself (DUP, APPEND), a reference cycle that would outlive the read; the reader clears the
/// arena when it is done with the values, which breaks every cycle.
final class PickleArena {
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []

    func list() -> PickleList {
        let list = PickleList()
        lists.append(list)
        return list
    }

    func dict() -> PickleDict {
        let dict = PickleDict()
        dicts.append(dict)
        return dict
    }

    /// Empties every container; the values built from them must no longer be needed.
    func clear() {
        for list in lists { list.items.removeAll() }
        for dict in dicts {
            dict.values.removeAll()
            dict.buildState = nil
        }
        lists.removeAll()
        dicts.removeAll()
    }
}

/// A dict keeps insertion order (Python dicts and OrderedDict both do).
final class PickleDict {
    enum Key: Hashable {
        case string(String)
        case int(Int64)
        var text: String {
            switch self {
            case .string(let s): s
            case .int(let i): String(i)
            }
        }
    }
    var keys: [Key] = []
    var values: [Key: PickleValue] = [:]
    /// State applied by BUILD (torch stores `_metadata` there); kept only to accept it.
    var buildState: PickleValue?

    func set(_ key: Key, _ value: PickleValue) {
        if values.updateValue(value, forKey: key) == nil { keys.append(key) }
    }
}

/// The only globals a state dict may name, each given a built-in meaning.
enum AllowedGlobal: Equatable {
    case orderedDict
    case rebuildTensorV2
    case rebuildParameter
    case storageType(WeightElementType, name: String)

    static func lookup(module: String, name: String) -> AllowedGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch", _):
            let types: [String: WeightElementType] = [
                "FloatStorage": .float32, "DoubleStorage": .float64, "HalfStorage": .float16,
                "BFloat16Storage": .bfloat16, "LongStorage": .int64, "IntStorage": .int32,
                "ShortStorage": .int16, "CharStorage": .int8, "ByteStorage": .uint8, "BoolStorage": .bool,
            ]
            return types[name].map { .storageType($0, name: name) }
        default:
            return nil
        }
    }

    var qualifiedName: String {
        switch self {
        case .orderedDict: "collections.OrderedDict"
        case .rebuildTensorV2: "torch._utils._rebuild_tensor_v2"
        case .rebuildParameter: "torch._utils._rebuild_parameter"
        case .storageType(_, let name): "torch.\(name)"
        }
    }
}

/// A storage named by a persistent id; its bytes live outside the pickle.
struct StorageReference {
    /// Key of the root storage holding the bytes.
    var key: String
    var elementType: WeightElementType
    /// Elements in the root storage.
    var rootCount: Int
    /// For legacy storage views: first element of the view in the root storage, and its length.
    var viewOffset: Int = 0
    var viewCount: Int
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, recorded rather than executed.
struct TensorReference {
    var storage: StorageReference
    var offset: Int
    var shape: [Int]
    var strides: [Int]
}

/// Runs one pickle (up to its STOP opcode) over a byte buffer.
struct RestrictedUnpickler {
    let bytes: [UInt8]
    let file: String
    private(set) var position: Int
    /// Resolves a persistent id (the tuple torch writes for each storage).
    let persistentLoad: (PickleValue) throws -> PickleValue
    /// Where lists and dicts are made (the caller clears it when done with the values).
    let arena: PickleArena

    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(bytes: [UInt8], file: String, position: Int = 0, arena: PickleArena,
         persistentLoad: @escaping (PickleValue) throws -> PickleValue) {
        self.bytes = bytes
        self.file = file
        self.position = position
        self.arena = arena
        self.persistentLoad = persistentLoad
    }

    /// Executes opcodes until STOP and returns the value left on the stack.
    mutating func load() throws -> PickleValue {
        stack.removeAll()
        marks.removeAll()
        memo.removeAll()
        while true {
            let opcodeOffset = position
            let opcode = try readByte("opcode")
            switch opcode {
            case 0x80: // PROTO
                let proto = try readByte("protocol")
                guard proto <= 5 else { throw malformed("pickle protocol \(proto) is unknown") }
            case 0x95: // FRAME (protocol 4): a length hint only
                _ = try read(8, "frame length")
            case 0x2E: // STOP
                guard stack.count == 1, marks.isEmpty else {
                    throw malformed("pickle stopped with \(stack.count) values on the stack")
                }
                return stack[0]
            case 0x28: // MARK
                marks.append(stack.count)
            case 0x7D: // EMPTY_DICT
                stack.append(.dict(arena.dict()))
            case 0x5D: // EMPTY_LIST
                stack.append(.list(arena.list()))
            case 0x29: // EMPTY_TUPLE
                stack.append(.tuple([]))
            case 0x74: // TUPLE
                stack.append(.tuple(try popToMark()))
            case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
                let n = Int(opcode) - 0x84
                guard stack.count >= n + (marks.last ?? 0) else { throw malformed("stack underflow in TUPLE\(n)") }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                stack.append(.tuple(items))
            case 0x71: // BINPUT
                memo[Int(try readByte("memo index"))] = try top()
            case 0x72: // LONG_BINPUT
                memo[Int(try readUInt32("memo index"))] = try top()
            case 0x94: // MEMOIZE
                memo[memo.count] = try top()
            case 0x68: // BINGET
                stack.append(try memoValue(Int(try readByte("memo index"))))
            case 0x6A: // LONG_BINGET
                stack.append(try memoValue(Int(try readUInt32("memo index"))))
            case 0x63: // GLOBAL "module\nname\n"
                let module = try readLine("global module")
                let name = try readLine("global name")
                stack.append(.global(try allowedGlobal(module: module, name: name, offset: opcodeOffset)))
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .string(let n) = name, case .string(let m) = module else {
                    throw malformed("STACK_GLOBAL needs two strings")
                }
                stack.append(.global(try allowedGlobal(module: m, name: n, offset: opcodeOffset)))
            case 0x52: // REDUCE
                let arguments = try pop()
                let callable = try pop()
                guard case .tuple(let args) = arguments else { throw malformed("REDUCE arguments are a \(arguments.typeName)") }
                guard case .global(let global) = callable else {
                    throw malformed("REDUCE applied to a \(callable.typeName)")
                }
                stack.append(try apply(global, args))
            case 0x51: // BINPERSID
                stack.append(try persistentLoad(try pop()))
            case 0x73, 0x75, 0x61, 0x65, 0x62: // SETITEM, SETITEMS, APPEND, APPENDS, BUILD
                try fillContainer(opcode)
            case 0x30: // POP
                if marks.last == stack.count { marks.removeLast() } else { _ = try pop() }
            case 0x31: // POP_MARK
                _ = try popToMark()
            case 0x32: // DUP
                stack.append(try top())
            default:
                guard let value = try literal(opcode) else {
                    throw WeightFileError.refusedOpcode(file: file, opcode: Self.opcodeName(opcode), offset: opcodeOffset)
                }
                stack.append(value)
            }
        }
    }

    /// Runs an opcode that fills the dict or list on the stack from the values above it
    /// (SETITEM, SETITEMS, APPEND, APPENDS, BUILD).
    private mutating func fillContainer(_ opcode: UInt8) throws {
        switch opcode {
        case 0x73: // SETITEM
            let value = try pop(), key = try pop()
            try dictOnTop().set(try dictKey(key), value)
        case 0x75: // SETITEMS
            let items = try popToMark()
            guard items.count % 2 == 0 else { throw malformed("SETITEMS with an odd number of values") }
            let dict = try dictOnTop()
            for i in stride(from: 0, to: items.count, by: 2) { dict.set(try dictKey(items[i]), items[i + 1]) }
        case 0x61: // APPEND
            let value = try pop()
            try listOnTop().items.append(value)
        case 0x65: // APPENDS
            let items = try popToMark()
            try listOnTop().items.append(contentsOf: items)
        case 0x62: // BUILD: only a dict's attribute state (torch's `_metadata`) is accepted
            let state = try pop()
            let target = try dictOnTop(opcode: "BUILD")
            switch state {
            case .dict, .none: target.buildState = state
            default: throw malformed("BUILD with a \(state.typeName) state")
            }
        default:
            preconditionFailure("opcode \(opcode) does not fill a container")
        }
    }

    /// The value a literal opcode pushes (integers, strings, bytes, `None`, booleans, floats),
    /// read from its operand; `nil` for any other opcode.
    private mutating func literal(_ opcode: UInt8) throws -> PickleValue? {
        switch opcode {
        case 0x4A: // BININT
            return .int(Int64(Int32(bitPattern: try readUInt32("int"))))
        case 0x4B: // BININT1
            return .int(Int64(try readByte("int")))
        case 0x4D: // BININT2
            let b = try read(2, "int")
            return .int(Int64(b[0]) | Int64(b[1]) << 8)
        case 0x8A: // LONG1
            let n = Int(try readByte("long length"))
            return Self.makeInteger(try read(n, "long"))
        case 0x8B: // LONG4
            let n = Int(try readUInt32("long length"))
            guard n <= 1 << 16 else { throw malformed("integer of \(n) bytes") }
            return Self.makeInteger(try read(n, "long"))
        case 0x58: // BINUNICODE
            return .string(try readString(Int(try readUInt32("string length"))))
        case 0x8C: // SHORT_BINUNICODE
            return .string(try readString(Int(try readByte("string length"))))
        case 0x8D: // BINUNICODE8
            return .string(try readString(try readLength64("string length")))
        case 0x43: // SHORT_BINBYTES
            return .bytes(try read(Int(try readByte("bytes length")), "bytes"))
        case 0x42: // BINBYTES
            return .bytes(try read(Int(try readUInt32("bytes length")), "bytes"))
        case 0x4E: // NONE
            // Spelled out: a bare `.none` would be the optional's nil, "not a literal".
            return PickleValue.none
        case 0x88: // NEWTRUE
            return .bool(true)
        case 0x89: // NEWFALSE
            return .bool(false)
        case 0x47: // BINFLOAT (big-endian IEEE double)
            let b = try read(8, "float")
            return .float(Double(bitPattern: b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }))
        default:
            return nil
        }
    }

    // MARK: Whitelisted meanings

    private func allowedGlobal(module: String, name: String, offset: Int) throws -> AllowedGlobal {
        guard let global = AllowedGlobal.lookup(module: module, name: name) else {
            throw WeightFileError.refusedGlobal(file: file, global: "\(module).\(name)", offset: offset)
        }
        return global
    }

    private func apply(_ global: AllowedGlobal, _ args: [PickleValue]) throws -> PickleValue {
        switch global {
        case .orderedDict:
            guard args.isEmpty else { throw malformed("OrderedDict called with \(args.count) arguments") }
            return .dict(arena.dict())
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard args.count == 6 || args.count == 7 else {
                throw malformed("_rebuild_tensor_v2 called with \(args.count) arguments")
            }
            guard case .storage(let storage) = args[0] else { throw malformed("tensor storage is a \(args[0].typeName)") }
            let offset = try int(args[1], "storage offset")
            let shape = try intTuple(args[2], "size")
            let strides = try intTuple(args[3], "stride")
            guard case .bool = args[4] else { throw malformed("requires_grad is a \(args[4].typeName)") }
            try requireEmptyHooks(args[5])
            return .tensor(try checkedTensor(storage, offset: offset, shape: shape, strides: strides))
        case .rebuildParameter:
            // (data, requires_grad, backward_hooks)
            guard args.count == 3, case .tensor = args[0] else { throw malformed("_rebuild_parameter arguments") }
            try requireEmptyHooks(args[2])
            return args[0]
        case .storageType:
            throw malformed("\(global.qualifiedName) called; storage types are only valid in persistent ids")
        }
    }

    /// Hooks would be callables; a state dict has none.
    private func requireEmptyHooks(_ value: PickleValue) throws {
        guard case .dict(let hooks) = value, hooks.keys.isEmpty else {
            throw malformed("tensor backward hooks must be an empty OrderedDict")
        }
    }

    /// Checks that every element the view can reach lies inside its storage.
    private func checkedTensor(_ storage: StorageReference, offset: Int, shape: [Int], strides: [Int]) throws -> TensorReference {
        guard shape.count == strides.count else { throw malformed("size \(shape) and stride \(strides) differ in rank") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw malformed("negative size, stride or offset in tensor of shape \(shape)")
        }
        let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
        if count > 0 {
            var last = offset
            for (size, stride) in zip(shape, strides) {
                let (step, o1) = (size - 1).multipliedReportingOverflow(by: stride)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else { throw malformed("tensor of shape \(shape) overflows its index range") }
                last = sum
            }
            guard last < storage.viewCount else {
                throw malformed("tensor of shape \(shape), stride \(strides), offset \(offset) reaches element \(last) of a storage of \(storage.viewCount)")
            }
        }
        return TensorReference(storage: storage, offset: offset, shape: shape, strides: strides)
    }

    // MARK: Stack helpers

    private mutating func pop() throws -> PickleValue {
        guard let value = stack.popLast(), stack.count >= (marks.last ?? 0) else {
            throw malformed("pickle stack underflow at offset \(position - 1)")
        }
        return value
    }

    private func top() throws -> PickleValue {
        guard let value = stack.last else { throw malformed("pickle stack empty at offset \(position - 1)") }
        return value
    }

    private mutating func popToMark() throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw malformed("no MARK at offset \(position - 1)") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private func memoValue(_ index: Int) throws -> PickleValue {
        guard let value = memo[index] else { throw malformed("memo index \(index) used before being set") }
        return value
    }

    private func dictOnTop(opcode: String = "SETITEM") throws -> PickleDict {
        guard case .dict(let d) = try top() else { throw malformed("\(opcode) on a \(try top().typeName)") }
        return d
    }

    private func listOnTop() throws -> PickleList {
        guard case .list(let l) = try top() else { throw malformed("APPEND on a \(try top().typeName)") }
        return l
    }

    private func dictKey(_ value: PickleValue) throws -> PickleDict.Key {
        switch value {
        case .string(let s): return .string(s)
        case .int(let i): return .int(i)
        default: throw malformed("dict key of type \(value.typeName)")
        }
    }

    func int(_ value: PickleValue, _ what: String) throws -> Int {
        guard case .int(let i) = value, let v = Int(exactly: i) else { throw malformed("\(what) is a \(value.typeName)") }
        return v
    }

    private func intTuple(_ value: PickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let items) = value else { throw malformed("\(what) is a \(value.typeName)") }
        return try items.map { try int($0, what) }
    }

    func malformed(_ reason: String) -> WeightFileError { .malformed(file: file, reason: reason) }

    // MARK: Byte reading

    private mutating func read(_ n: Int, _ what: String) throws -> [UInt8] {
        guard n >= 0, n <= bytes.count - position else {
            throw WeightFileError.truncated(file: file, offset: position, needed: n, what: "pickle \(what)")
        }
        defer { position += n }
        return Array(bytes[position..<position + n])
    }

    private mutating func readByte(_ what: String) throws -> UInt8 {
        guard position < bytes.count else {
            throw WeightFileError.truncated(file: file, offset: position, needed: 1, what: "pickle \(what)")
        }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func readUInt32(_ what: String) throws -> UInt32 {
        let b = try read(4, what)
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    private mutating func readLength64(_ what: String) throws -> Int {
        let b = try read(8, what)
        let v = b.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard v <= UInt64(bytes.count) else {
            throw WeightFileError.truncated(file: file, offset: position, needed: Int(clamping: v), what: "pickle \(what)")
        }
        return Int(v)
    }

    private mutating func readString(_ n: Int) throws -> String {
        let b = try read(n, "string")
        guard let s = String(validating: b, as: UTF8.self) else { throw malformed("string is not valid UTF-8 at offset \(position - n)") }
        return s
    }

    private mutating func readLine(_ what: String) throws -> String {
        guard let end = bytes[position...].prefix(256).firstIndex(of: 0x0A) else {
            throw WeightFileError.truncated(file: file, offset: position, needed: 1, what: "pickle \(what) line")
        }
        let line = bytes[position..<end]
        position = end + 1
        guard let s = String(validating: line, as: UTF8.self) else { throw malformed("\(what) is not valid UTF-8") }
        return s
    }

    /// LONG1/LONG4 payload: little-endian two's complement.
    static func makeInteger(_ b: [UInt8]) -> PickleValue {
        if b.isEmpty { return .int(0) }
        if b.count <= 8 {
            var v: UInt64 = 0
            for (i, byte) in b.enumerated() { v |= UInt64(byte) << (8 * UInt64(i)) }
            if b.count < 8, b.last! & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(b.count)) }
            return .int(Int64(bitPattern: v))
        }
        return .bigInt(b)
    }

    static func opcodeName(_ opcode: UInt8) -> String {
        let names: [UInt8: String] = [
            0x69: "INST", 0x6F: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x50: "PERSID",
            0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x49: "INT", 0x4C: "LONG", 0x53: "STRING",
            0x56: "UNICODE", 0x46: "FLOAT", 0x64: "DICT", 0x6C: "LIST", 0x67: "GET", 0x70: "PUT",
            0x54: "BINSTRING", 0x55: "SHORT_BINSTRING", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET",
            0x90: "ADDITEMS", 0x91: "FROZENSET", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
            0x98: "READONLY_BUFFER",
        ]
        let hex = "0x" + String(opcode, radix: 16, uppercase: true)
        return names[opcode].map { "\($0) (\(hex))" } ?? "\(hex)"
    }
}
