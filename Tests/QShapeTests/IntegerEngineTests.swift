// Tests: the integer kernels against wide-integer oracles; the integer module is float-free.
import XCTest
import Foundation
import Tensors
import NeuralNet
import Quantization
@testable import IntegerRuntime
import CIntegerKernels
@testable import Workflows
@testable import Config

/// The integer kernels against a wide-integer oracle, edge values included.
final class IntegerEngineTests: XCTestCase {
    /// The oracle: exact rational rounding of acc·m/2^s, half toward +∞, in 128-bit arithmetic.
    func oracle(_ acc: Int64, _ m: Int64, _ s: Int64) -> Int64 {
        let p = acc.multipliedFullWidth(by: m)  // exact 128-bit product
        guard s > 0 else { return Int64(truncatingIfNeeded: p.low) }
        // floor((p + 2^(s−1)) / 2^s) on the 128-bit value
        let half = UInt64(1) << UInt64(s - 1)
        var low = p.low &+ half
        var high = p.high &+ (low < half ? 1 : 0)
        low = (low >> UInt64(s)) | (s == 64 ? 0 : UInt64(bitPattern: Int64(high)) << UInt64(64 - s))
        high >>= Int64(s)
        XCTAssertTrue(high == 0 || high == -1, "oracle result fits 64 bits")
        return Int64(bitPattern: low)
    }

    func testRequantizeMatchesOracleExhaustivelyOnSmallRangesAndAtTheEdges() {
        let limit: Int64 = (1 << 31) - 1
        // Every accumulator in −2048…2048 for a spread of multipliers and shifts 0…31.
        for m: Int64 in [1, 3, 1 << 30, (1 << 31) - 1, 1_518_500_250] {
            for s: Int64 in [0, 1, 2, 7, 15, 30, 31] {
                for acc in Int64(-2048)...2048 {
                    XCTAssertEqual(
                        requantize(acc, multiplier: m, shift: s, accumulatorLimit: limit), oracle(acc, m, s))
                }
            }
        }
        // INT32_MIN and INT32_MAX accumulators, the largest multiplier, shifts 0 and 31.
        for acc: Int64 in [Int64(Int32.min), Int64(Int32.max), -1, 0, 1] {
            for s: Int64 in [0, 31, 62] where !(s == 0 && abs(acc) > 1) {
                let m: Int64 = (1 << 31) - 1
                XCTAssertEqual(
                    requantize(acc, multiplier: m, shift: s, accumulatorLimit: 1 << 31), oracle(acc, m, s),
                    "acc \(acc) shift \(s)")
            }
        }
        // The 32-bit form the batched loops use where it applies: the same values, accumulators
        // beyond the 32-bit range (clamped) included; where it does not apply it is not chosen.
        for m: Int64 in [0, 1, 1 << 30, (1 << 31) - 1] {
            for s: Int64 in [0, 1, 31, 62] {
                for acc: Int64 in [Int64.min, Int64(Int32.min) - 5, -2049, -1, 0, 7, 1 << 40, Int64.max] {
                    XCTAssertEqual(
                        requantize(acc, narrowMultiplier: Int32(m), shift: s, accumulatorLimit: limit),
                        requantize(acc, multiplier: m, shift: s, accumulatorLimit: limit), "acc \(acc) m \(m)"
                    )
                }
            }
        }
        func narrow(_ m: [Int64], bits: Int) -> [Int32]? {
            Requantization(
                multiplier: m, shift: m.map { _ in 8 }, outMin: -127, outMax: 127, accumulatorBits: bits
            )
            .narrowMultipliers
        }
        XCTAssertEqual(narrow([1, (1 << 31) - 1], bits: 32), [1, Int32.max])
        XCTAssertNil(narrow([1, 1 << 31], bits: 32))
        XCTAssertNil(narrow([1], bits: 64))
        // Ties: 5·(1/2) = 2.5 → 3, −5·(1/2) = −2.5 → −2 (half toward +∞), −7/4 = −1.75 → −2.
        XCTAssertEqual(requantize(5, multiplier: 1, shift: 1, accumulatorLimit: limit), 3)
        XCTAssertEqual(requantize(-5, multiplier: 1, shift: 1, accumulatorLimit: limit), -2)
        XCTAssertEqual(requantize(-7, multiplier: 1, shift: 2, accumulatorLimit: limit), -2)
    }

    func testRequantizeNeverTrapsOnExtremeInputs() {
        for acc: Int64 in [Int64.min, Int64.max, Int64(Int32.min) * 4] {
            for s: Int64 in [0, 31, 62] {
                // The accumulator is clamped to the layer's range first, so the product fits.
                let r = requantize(acc, multiplier: (1 << 31) - 1, shift: s, accumulatorLimit: (1 << 31) - 1)
                XCTAssertEqual(r, oracle(acc < 0 ? -((1 << 31) - 1) : (1 << 31) - 1, (1 << 31) - 1, s))
            }
        }
        XCTAssertEqual(saturate(Int64.max, -127, 127), 127)
        XCTAssertEqual(saturate(Int64.min, -127, 127), -127)
        XCTAssertEqual(roundedDivide(7, by: 2), 4)
        XCTAssertEqual(roundedDivide(-7, by: 2), -4)
        XCTAssertEqual(roundedDivide(-5, by: 4), -1)
        XCTAssertEqual(bitsNeeded(0), 1)
        XCTAssertEqual(bitsNeeded(127), 8)
        XCTAssertEqual(bitsNeeded(128), 9)
        XCTAssertEqual(bitsNeeded(Int64(Int32.max)), 32)
    }

    func testFixedPointMultiplierRepresentsTheScale() {
        for m in [0.5, 0.75, 1e-3, 3.1e-5, 0.999_999_9, 1.5, 7.2e-9] {
            let (m0, shift) = Converter.fixedPoint(m, bits: 31)
            XCTAssertGreaterThanOrEqual(shift, 0)
            XCTAssertLessThan(m0, Int64(1) << 32)
            XCTAssertEqual(Double(m0) / _pow(2, Double(shift)), m, accuracy: m * 1e-8, "\(m)")
        }
        XCTAssertEqual(Converter.powerOfTwo(0.26).1, 2)
    }

    /// Random small integer layers against the same sums done in Int64 with Double-free arithmetic.
    func testDenseAndConvAgainstWideIntegerOracle() {
        var rng = SeededRandom(seed: 11)
        func r(_ lo: Int, _ hi: Int) -> Int { lo + rng.below(hi - lo + 1) }
        for trial in 0..<20 {
            let wide = trial % 2 == 0
            let extreme = trial % 5 == 0  // weights and inputs at ±32767
            // Up to 19 channels and 81 positions: whole tiles of the kernel (16 positions × 8 channels)
            // and the partial ones at the edges.
            let c = r(1, 3), h = r(3, 9), w = r(3, 9), o = r(1, 19)
            var k = r(1, 3), s = r(1, 2), p = r(0, 1)
            if trial % 4 == 1 { (k, s, p) = (3, 1, 1) }  // "same" size: the patches' shifted-plane copies
            let wv = (0..<(o * c * k * k)).map { _ in
                Int16(extreme ? (rng.below(2) == 0 ? -32767 : 32767) : r(-127, 127))
            }
            let x = (0..<(c * h * w)).map { _ in
                Int16(extreme ? (rng.below(2) == 0 ? -32767 : 32767) : r(-255, 255))
            }
            let bias = (0..<o).map { _ in Int64(r(-100_000, 100_000)) }
            let mult = (0..<o).map { _ in Int64(r(1 << 14, (1 << 15) - 1)) },
                shift = (0..<o).map { _ in Int64(r(10, 40)) }
            let req = Requantization(
                multiplier: mult, shift: shift, outMin: -32767, outMax: 32767, accumulatorBits: wide ? 64 : 32
            )
            let conv = IntegerConv(
                inChannels: c, outChannels: o, kernel: k, stride: s, padding: p, weight: wv,
                weightBits: BitWidth(extreme ? 16 : 8)!, bias: bias, requant: req)
            let model = IntegerModel(inputShape: [c, h, w], layers: [.conv(conv)])
            let y = IntegerEngine(model).run(x)
            let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
            // `runBatch`, which folds a clamp after the convolution into its saturation, against
            // `run` sample by sample.
            let clamped = IntegerEngine(
                IntegerModel(inputShape: [c, h, w], layers: [.conv(conv), .clamp(lo: -50, hi: 20_000)]))
            XCTAssertEqual(
                clamped.runBatch(x + x.reversed(), count: 2), clamped.run(x) + clamped.run(x.reversed()),
                "trial \(trial)")
            XCTAssertEqual(y.count, o * oh * ow)
            let accLimit: Int64 = wide ? Int64.max / 2 : Int64(Int32.max)
            for oc in 0..<o {
                for yy in 0..<oh {
                    for xx in 0..<ow {
                        var acc = bias[oc]
                        for ic in 0..<c {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = yy * s - p + ky, ix = xx * s - p + kx
                                    guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                                    acc +=
                                        Int64(wv[((oc * c + ic) * k + ky) * k + kx])
                                        * Int64(x[(ic * h + iy) * w + ix])
                                }
                            }
                        }
                        if !wide && (acc > Int64(Int32.max) || acc < Int64(Int32.min)) { continue }  // the device would wrap; the converter refuses such layers
                        let clamped = min(max(acc, -accLimit), accLimit)
                        let expected = min(max(oracle(clamped, mult[oc], shift[oc]), -32767), 32767)
                        XCTAssertEqual(Int64(y[(oc * oh + yy) * ow + xx]), expected, "trial \(trial)")
                    }
                }
            }
        }
    }

    func testPoolingAndClampKernels() {
        let x: [Int16] = [1, -3, 5, 7, 2, 2, -8, 0, 9, 4, -1, -1, 3, 3, 3, 4]  // 1×4×4
        XCTAssertEqual(
            IntegerEngine(
                IntegerModel(inputShape: [1, 4, 4], layers: [.maxPool(kernel: 2, stride: 2, padding: 0)])
            ).run(x), [2, 7, 9, 4])
        // (1 − 3 + 2 + 2)/4 = 0.5 → 1; (5 + 7 − 8 + 0)/4 = 1; (9 + 4 + 3 + 3)/4 = 4.75 → 5; (−1 − 1 + 3 + 4)/4 = 1.25 → 1
        XCTAssertEqual(
            IntegerEngine(IntegerModel(inputShape: [1, 4, 4], layers: [.avgPool(kernel: 2, stride: 2)])).run(
                x), [1, 1, 5, 1])
        XCTAssertEqual(
            IntegerEngine(IntegerModel(inputShape: [1, 4, 4], layers: [.globalAvgPool])).run(x), [2])  // 30/16 = 1.875
        XCTAssertEqual(
            IntegerEngine(IntegerModel(inputShape: [16], layers: [.clamp(lo: 0, hi: 6)])).run(x).prefix(4),
            [1, 0, 5, 6])
        let padded = IntegerEngine(
            IntegerModel(inputShape: [1, 4, 4], layers: [.maxPool(kernel: 3, stride: 2, padding: 1)])
        ).run(x)
        XCTAssertEqual(padded, [2, 7, 9, 4])
    }

    /// The module that runs on the device does not compute in floating point: no type in its
    /// type-checked syntax tree (`swiftc -dump-ast`, where an inferred `0.5` is a Double) is a
    /// floating-point type, and it imports only its C kernel header, whose clang syntax tree has
    /// no floating-point type either and which GCC compiles with -mgeneral-regs-only. The same
    /// scans find an inferred literal and a folded float constant.
    func testIntegerRuntimeContainsNoFloatingPoint() throws {
        try checkKernelHeaderIsInteger()
        let dir = "\(Fixtures.repository)/Sources/IntegerRuntime"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".swift") }
            .sorted()
        XCTAssertFalse(files.isEmpty)
        let floating = try NSRegularExpression(
            pattern: #"\b(Float|Double|Float16|Float32|Float64|Float80|CGFloat)\b"#)
        func typeCheckedTree(_ paths: [String]) throws -> String {
            let swiftc = try Tool.require("swiftc", package: "the Swift toolchain")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: swiftc)
            p.arguments =
                [
                    "-dump-ast", "-parse-as-library", "-module-name", "IntegerRuntime", "-I",
                    "\(Fixtures.repository)/Sources/CIntegerKernels", "-I",
                    "\(Fixtures.repository)/Sources/CProcessor"
                ] + paths
            let out = Pipe()
            p.standardOutput = out; p.standardError = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "swiftc -dump-ast failed")
            return String(decoding: data, as: UTF8.self)
        }
        func floatingTypes(_ tree: String) -> Set<String> {
            Set(
                floating.matches(in: tree, range: NSRange(tree.startIndex..., in: tree)).map {
                    (tree as NSString).substring(with: $0.range)
                })
        }
        let tree = try typeCheckedTree(files.map { "\(dir)/\($0)" })
        XCTAssertGreaterThan(tree.count, 10_000, "the dump holds the module")
        XCTAssertEqual(floatingTypes(tree), [], "floating-point types in Sources/IntegerRuntime")
        let imports = try NSRegularExpression(pattern: #"^\s*import\s+(\w+)"#, options: [.anchorsMatchLines])
        for f in files {
            let text = try String(contentsOfFile: "\(dir)/\(f)", encoding: .utf8)
            let modules = imports.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
                (text as NSString).substring(with: $0.range(at: 1))
            }
            XCTAssertEqual(
                Set(modules).subtracting(["CIntegerKernels", "CProcessor"]), [], "\(f) imports a module")
        }
        // The control: a literal whose type is only inferred is found.
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent(
            "qshape-float-probe-\(UUID().uuidString).swift")
        try "public func scaled(_ x: Int) -> Int { let half = 0.5; return x + Int(half * 2) }\n".write(
            to: probe, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: probe) }
        XCTAssertTrue(floatingTypes(try typeCheckedTree([probe.path])).contains("Double"))
    }

    /// The C headers the engine imports (its kernels, and CPUID to choose among them): clang's
    /// syntax tree of each (system headers included) has no floating-point type, and GCC compiles
    /// every function in it with only general registers (the kernel's AVX2 and AVX-512 twins add
    /// integer vector registers by their target attributes; their body is the baseline's).
    /// Controls: a folded float constant, which GCC alone accepts, is found by the tree; a double
    /// computation fails GCC.
    func checkKernelHeaderIsInteger() throws {
        for module in ["CIntegerKernels", "CProcessor"] {
            try checkHeaderIsInteger("\(Fixtures.repository)/Sources/\(module)/shim.h")
        }
    }

    func checkHeaderIsInteger(_ header: String) throws {
        let clang = try Tool.require("clang", package: "the Swift toolchain")
        let gcc = try Tool.require("gcc", package: "gcc")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "qshape-header-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let floating = try NSRegularExpression(pattern: #"'(float|double|long double|_Float16|__bf16)'"#)
        func floatingTypeCount(_ path: String) throws -> Int {
            let tree = try Tool.run(
                clang, ["-fsyntax-only", "-Xclang", "-ast-dump", "-x", "c", path], in: dir.path)
            XCTAssertGreaterThan(tree.count, 1000, "the dump holds \(path)")
            return floating.numberOfMatches(in: tree, range: NSRange(tree.startIndex..., in: tree))
        }
        func compilesWithGeneralRegistersOnly(_ path: String) -> Bool {
            let flags = [
                "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-psabi", "-mgeneral-regs-only"
            ]
            return
                (try? Tool.run(
                    gcc, flags + ["-fkeep-inline-functions", "-c", "-x", "c", path, "-o", "h.o"], in: dir.path
                ))
                != nil
        }
        XCTAssertEqual(try floatingTypeCount(header), 0, "floating-point types in \(header)")
        XCTAssertTrue(compilesWithGeneralRegistersOnly(header), "\(header) needs floating-point registers")
        let folded = dir.appendingPathComponent("folded.h").path,
            computed = dir.appendingPathComponent("computed.h").path
        try
            "#include <stdint.h>\nstatic inline int32_t f(int32_t x) { float h = 0.5f; return x + (int32_t)(h * 2); }\n"
            .write(toFile: folded, atomically: true, encoding: .utf8)
        try "#include <stdint.h>\nstatic inline int32_t f(int32_t x) { return (int32_t)((double)x * 2); }\n"
            .write(toFile: computed, atomically: true, encoding: .utf8)
        XCTAssertGreaterThan(try floatingTypeCount(folded), 0)
        XCTAssertFalse(compilesWithGeneralRegistersOnly(computed))
    }

    /// Random dense layers against the same sums in Int64, requantised by the 128-bit oracle:
    /// both accumulators, weights and inputs at ±32767, clamps of a fused ReLU and of int16.
    func testDenseAgainstWideIntegerOracle() {
        var rng = SeededRandom(seed: 12)
        func r(_ lo: Int, _ hi: Int) -> Int { lo + rng.below(hi - lo + 1) }
        for trial in 0..<40 {
            let wide = trial % 2 == 0, extreme = trial % 5 == 0, relu = trial % 3 == 0
            let n = r(1, 70), o = r(1, 40), bits = extreme ? 16 : [2, 3, 4, 8][trial % 4]
            let qmax = (1 << (bits - 1)) - 1
            let wv = (0..<(n * o)).map { _ in
                Int16(extreme ? (rng.below(2) == 0 ? -qmax : qmax) : r(-qmax, qmax))
            }
            // A batch of samples: `run` on each and `runBatch` on all (its kernel's path, with
            // padding for odd n and batches that are not a multiple of eight) must both match.
            let count = r(1, 19)
            let batch = (0..<(count * n)).map { _ in
                Int16(extreme ? (rng.below(2) == 0 ? -32767 : 32767) : r(-255, 255))
            }
            let bias = (0..<o).map { _ in Int64(r(-100_000, 100_000)) }
            // The converter keeps |accumulator|·multiplier within 63 bits (the C checks it too).
            let mult = (0..<o).map { _ in Int64(r(1 << 14, extreme ? (1 << 15) - 1 : (1 << 31) - 1)) }
            let shift = (0..<o).map { _ in Int64(r(10, 50)) }
            let (lo, hi): (Int64, Int64) = relu ? (0, 255) : (-32767, 32767)
            let req = Requantization(
                multiplier: mult, shift: shift, outMin: lo, outMax: hi, accumulatorBits: wide ? 64 : 32)
            let dense = IntegerDense(
                inFeatures: n, outFeatures: o, weight: wv, weightBits: BitWidth(bits)!, bias: bias,
                requant: req)
            let engine = IntegerEngine(IntegerModel(inputShape: [n], layers: [.dense(dense)]))
            let batched = engine.runBatch(batch, count: count)
            XCTAssertEqual(batched.count, count * o)
            let accLimit: Int64 = wide ? Int64.max / 2 : Int64(Int32.max)
            for s in 0..<count {
                let x = Array(batch[s * n..<(s + 1) * n]), y = engine.run(x)
                XCTAssertEqual(y, Array(batched[s * o..<(s + 1) * o]), "trial \(trial), sample \(s): batch")
                for oc in 0..<o {
                    let acc = (0..<n).reduce(bias[oc]) { $0 + Int64(wv[oc * n + $1]) * Int64(x[$1]) }
                    if !wide && (acc > Int64(Int32.max) || acc < Int64(Int32.min)) { continue }  // refused by the converter
                    let expected = min(
                        max(oracle(min(max(acc, -accLimit), accLimit), mult[oc], shift[oc]), lo), hi)
                    XCTAssertEqual(Int64(y[oc]), expected, "trial \(trial), sample \(s), output \(oc)")
                }
            }
        }
    }
}

/// The dense kernel at every instruction-set level this processor has, against Int64 sums.
final class IntegerKernelLevelTests: XCTestCase {
    func testEveryKernelLevelGivesTheOracleSums() {
        var rng = SeededRandom(seed: 13)
        XCTAssert((0...3).contains(IntegerEngine.kernelLevel))
        for level in 0...IntegerEngine.kernelLevel {
            for trial in 0..<12 {
                let pairs = 1 + rng.below(40), stride = 2 * pairs + rng.below(3),
                    outStride = 16 + rng.below(5)
                let extreme = trial % 3 == 0  // ±32767 everywhere: the sums wrap in 32 bits
                func value() -> Int16 {
                    if extreme { return rng.below(2) == 0 ? -32767 : 32767 }
                    return Int16(rng.below(511) - 255)
                }
                let w = (0..<(pairs * 32)).map { _ in value() }, x = (0..<(8 * stride)).map { _ in value() }
                var out = [Int32](repeating: -1, count: 8 * outStride)
                qs_dense16x8(w, x, stride, pairs, &out, outStride, level)
                for s in 0..<8 {
                    for r in 0..<16 {
                        var sum: Int64 = 0
                        for k in 0..<(2 * pairs) {
                            let weight = Int64(w[(k / 2) * 32 + r * 2 + k % 2])
                            sum += weight * Int64(x[s * stride + k])
                        }
                        XCTAssertEqual(
                            out[s * outStride + r], Int32(truncatingIfNeeded: sum),
                            "level \(level), trial \(trial)")
                    }
                    for r in 16..<outStride {
                        XCTAssertEqual(out[s * outStride + r], -1, "written past a row")
                    }
                }
            }
        }
    }
}
