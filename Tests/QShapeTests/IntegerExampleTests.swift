// Tests: the worked example of Docs/Integer.md.
import XCTest
import Quantization
import IntegerRuntime

/// The worked example of Docs/Integer.md, computed with the library's functions.
final class IntegerExampleTests: XCTestCase {
    func testDocumentedDenseLayerExample() {
        let sIn = 1.2 / 255
        let xq: [Int64] = [0.5, 1.2, 0.0].map { Int64(($0 / sIn).rounded()) }
        XCTAssertEqual(xq, [106, 255, 0])
        let q = WeightQuantizer(bits: 8).quantize([0.30, -0.12, 0.05, -0.25, 0.40, 0.10], shape: [2, 3])
        XCTAssertEqual(q.factors, [317.5])
        XCTAssertEqual(q.values, [95, -38, 16, -79, 127, 32])
        let sW = 1 / Double(q.factors[0])
        let bq = [0.1, -0.05].map { Int64(($0 / (sIn * sW)).rounded()) }
        XCTAssertEqual(bq, [6747, -3373])
        let acc = (0..<2).map { o in
            bq[o] + (0..<3).reduce(Int64(0)) { $0 + Int64(q.values[o * 3 + $1]) * xq[$1] }
        }
        XCTAssertEqual(acc, [7127, 20638])
        let worst = bq[0] + Int64(95 + 38 + 16) * 255
        XCTAssertEqual(bitsNeeded(worst), 17)
        let sOut = 0.6 / 255
        let (m0, shift) = Converter.fixedPoint(sIn * sW / sOut, bits: 31)
        XCTAssertEqual(m0, 1_731_514_374)
        XCTAssertEqual(shift, 38)
        let out = acc.map {
            saturate(requantize($0, multiplier: m0, shift: shift, accumulatorLimit: Int64(Int32.max)), 0, 255)
        }
        XCTAssertEqual(out, [45, 130])
    }
}
