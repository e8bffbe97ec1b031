import Foundation
import H2TCore
import H2TRegistry
import Testing

@Suite("predictions as CSV")
struct PredictionsCSVTests {
    /// 50 inputs in blocks of 7 (a short last block) on 1 to 4 threads give the text of one
    /// serial pass with Foundation's `%.6g`, including quoted fields (commas, quotes, each kind
    /// of line break) and awkward values.
    @Test func blocksOnAnyThreadCountGiveTheSerialText() throws {
        let classes = ["cat", "dog, big", "say \"hi\""]
        var probabilities: [Float] = []
        var seed: UInt64 = 7
        for _ in 0..<(50 * classes.count) {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            probabilities.append(Float(seed >> 40) / Float(1 << 24))
        }
        probabilities[0] = 0; probabilities[1] = 1; probabilities[2] = 1e-7; probabilities[3] = 0.999_999_9; probabilities[4] = 123_456_792  // 123,456,789 as a Float
        probabilities[5] = -0.0; probabilities[6] = .leastNonzeroMagnitude; probabilities[7] = -.greatestFiniteMagnitude
        probabilities[8] = .nan; probabilities[9] = .infinity; probabilities[10] = 0.000_123_456_5; probabilities[11] = 1e-5
        var inputs = (0..<50).map { $0 == 3 ? "image,3.png" : "input-\($0)" }
        // Line breaks, the CRLF pair being one Character; a name of non-ASCII characters.
        inputs[4] = "two\r\nlines.png"; inputs[5] = "cr\ronly"; inputs[6] = "lf\nonly"; inputs[7] = "é,ü\u{301}.jpg"; inputs[8] = "фото.png"
        let predictions = Predictions(classNames: classes, inputs: inputs, labels: (0..<50).map { $0 % 3 }, probabilities: probabilities)

        var expected = "input,label,p_cat,\"p_dog, big\",\"p_say \"\"hi\"\"\"\n"
        func field(_ s: String) -> String {
            guard s.unicodeScalars.contains(where: { ",\"\r\n".unicodeScalars.contains($0) }) else { return s }
            return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        for i in 0..<50 {
            let values: [String] = predictions.probabilities(of: i).map { String(format: "%.6g", $0) }
            expected += field(inputs[i]) + "," + field(classes[i % 3]) + "," + values.joined(separator: ",") + "\n"
        }
        for threads in 1...4 {
            #expect(try predictions.csv(parallelism: Parallelism(threads: threads), blockRows: 7) == expected, "\(threads) threads")
        }
        #expect(try predictions.csv() == expected)
        let none = Predictions(classNames: ["a"], inputs: [], labels: [], probabilities: [])
        #expect(try none.csv(parallelism: Parallelism(threads: 3)) == "input,label,p_a\n")
    }
}
