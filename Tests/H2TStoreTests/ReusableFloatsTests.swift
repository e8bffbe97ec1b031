import H2TCore
import Testing

@Suite("Reusable float memory")
struct ReusableFloatsTests {
    /// Small requests come from malloc; from 4 MB the memory is 2 MB-aligned (huge-page advice);
    /// growing drops the contents, a request within the capacity keeps memory and contents.
    @Test func growsAcrossTheHugePageThresholdAndKeepsWhatFits() {
        let memory = ReusableFloats()
        for count in [1, 1000, (4 << 20) / 4 - 1, (4 << 20) / 4, 3_000_001] {
            let buffer = memory.prefix(count)
            #expect(buffer.count == count)
            #expect(memory.capacity >= count)
            if count * 4 >= 4 << 20 {
                #expect(Int(bitPattern: buffer.baseAddress) % (2 << 20) == 0, "\(count) floats not 2 MB-aligned")
            }
            buffer[count - 1] = -1
            for i in stride(from: 0, to: count, by: 4093) { buffer[i] = Float(i) }
            let again = memory.prefix(count / 2 + 1)
            #expect(again.baseAddress == buffer.baseAddress, "a smaller request reuses the memory")
            for i in stride(from: 0, to: count / 2 + 1, by: 4093) { #expect(again[i] == Float(i)) }
        }
    }
}
