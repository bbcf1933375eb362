// Tests: the shaping passes against PenaltyReference, and the reference against finite differences.
import XCTest
import Tensors
import NeuralNet
@testable import Shaping
import IntegerRuntime
@testable import Benchmarks
@testable import Workflows
@testable import Config

/// Each shaping penalty's gradient against central finite differences of a Double reference
/// (relative error < 1e-4) on tensors of several sizes and distributions.
final class PenaltyTests: XCTestCase {
    /// Weights drawn from named distributions, shaped like trained weights (σ ≈ 0.05).
    static func sample(_ kind: String, _ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        switch kind {
        case "normal": return (0..<n).map { _ in 0.05 * rng.normal() }
        case "uniform": return (0..<n).map { _ in rng.uniform(-0.08, 0.08) }
        case "laplace":
            return (0..<n).map { _ in
                let u = rng.uniform(-0.5, 0.5);
                return Float(-0.03 * (u < 0 ? -1 : 1) * _log(1 - 2 * Double(abs(u))))
            }
        case "skewed": return (0..<n).map { _ in Float(0.02 * _exp(Double(rng.normal()))) - 0.03 }
        default:  // one outlier
            var w = (0..<n).map { _ in 0.05 * rng.normal() }
            w[n / 3] = 0.6
            return w
        }
    }

    static let distributions = ["normal", "uniform", "laplace", "skewed", "outlier"]

    /// The fast passes against the Double reference (`PenaltyReference`): the same values, and
    /// the same gradient; the reference's gradient against central finite differences of its values.
    func checkGradient(
        _ w: [Float], _ scales: [PenaltyTerm: Double],
        _ configure: (inout PenaltySettings) -> Void = { _ in },
        label: String, file: StaticString = #filePath, line: UInt = #line
    ) {
        var s = PenaltySettings(Set(scales.keys))
        configure(&s)
        let st = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
        let value = st.values(s).reduce(0.0) { $0 + (scales[$1.key] ?? 0) * $1.value }
        let wd = w.doubles
        XCTAssertEqual(
            value, PenaltyReference.total(wd, s, scales: scales), accuracy: 1e-5 * max(1, abs(value)),
            "\(label) value", file: file, line: line)
        var g = [Float](repeating: 0, count: w.count)
        _ = w.withUnsafeBufferPointer { wp in
            g.withUnsafeMutableBufferPointer { gp in Penalties.addGradient(wp, gp, st, s, scales: scales) }
        }
        let reference = PenaltyReference.gradient(wd, s, scales: scales)
        // Where u = w·qmax/M is within 10⁻³ of a rounding tie, Float and Double may round it apart.
        let qk = Double(BitWidth.qmax(s.quantErrorBits)) / (wd.map(abs).max() ?? 1)
        let compared = wd.indices.filter { j in
            !s.has(.quantError) || abs(abs(wd[j] * qk).truncatingRemainder(dividingBy: 1) - 0.5) > 1e-3
        }
        let all = Dictionary(uniqueKeysWithValues: compared.map { ($0, reference[$0]) })
        // The residuals of u up to qmax = 127 lose 7 of Float's 24 bits: the maximum's push, from
        // mean((u − r)·u) over the group, is then good to a few 10⁻⁴.
        let tolerance = s.has(.quantError) ? 5e-4 : 1e-4
        XCTAssertLessThan(
            relativeError(g, all), tolerance, "\(label): fast against reference", file: file, line: line)
        // The loss term's way, the quantisation sums and the range band deferred to the gradient
        // pass: the same values once it has run, the same gradient (the relative error's −K·w
        // written after the pass here, by the optimiser in training).
        var gd = [Float](repeating: 0, count: w.count)
        let deferred = w.withUnsafeBufferPointer { wp in
            gd.withUnsafeMutableBufferPointer { gp in
                Penalties.addGradient(wp, gp, Penalties.evaluate(wp, s, deferring: true), s, scales: scales)
            }
        }
        XCTAssertTrue(deferred.rangeBand == nil && !deferred.quantSumsPending, label, file: file, line: line)
        for (t, v) in st.values(s) {
            XCTAssertEqual(
                deferred.values(s)[t]!, v, accuracy: 1e-6 * max(1, abs(v)), "\(label): deferred \(t)",
                file: file, line: line)
        }
        XCTAssertLessThan(
            relativeError(gd, Dictionary(uniqueKeysWithValues: g.indices.map { ($0, Double(g[$0])) })), 1e-5,
            "\(label): deferred against at once", file: file, line: line)
        let indices =
            w.count <= 400 ? Array(0..<w.count) : (0..<400).map { ($0 * 7919) % w.count } + [w.count / 3]
        let h = 1e-7 * (w.map { Double(abs($0)) }.max() ?? 1)
        let numeric = numericGradient(wd, indices: indices, h: h) {
            PenaltyReference.total($0, s, scales: scales)
        }
        XCTAssertLessThan(
            relativeError(reference.map(Float.init), numeric), 1e-4,
            "\(label): reference against finite differences",
            file: file, line: line)
    }

    func testKurtosisAndSkewnessGradients() {
        for kind in Self.distributions {
            for n in [7, 64, 1001] {
                checkGradient(
                    Self.sample(kind, n, seed: 1), [.kurtosis: 1], { $0.kurtosisTarget = 1.8 },
                    label: "kurtosis \(kind) n=\(n)")
                checkGradient(
                    Self.sample(kind, n, seed: 2), [.skewness: 0.7], { $0.skewnessTarget = 0.2 },
                    label: "skewness \(kind) n=\(n)")
            }
        }
    }

    func testRangeGradient() {
        for kind in Self.distributions {
            for n in [9, 100, 2003] {
                checkGradient(
                    Self.sample(kind, n, seed: 3), [.range: 0.5],
                    {
                        $0.rangeTarget = 1.2; $0.rangeSharpness = 20
                    },
                    label: "range \(kind) n=\(n)")
                // At the default target some groups are within it by the bound max s + ln(n)/β alone
                // (uniform), others not (outlier): both agree with the reference.
                checkGradient(
                    Self.sample(kind, n, seed: 3), [.range: 0.5], { $0.rangeTarget = 3 },
                    label: "range, target 3, \(kind) n=\(n)")
            }
        }
        var s = PenaltySettings([.range])
        s.rangeTarget = 3
        let uniform = Self.sample("uniform", 2003, seed: 3)
        let st = uniform.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
        XCTAssertLessThanOrEqual(st.range, 3, "skipped by the bound")
        XCTAssertLessThanOrEqual(PenaltyReference.range(uniform.doubles, beta: 20), st.range)
    }

    /// Near the target the first bound, max s + ln(n)/β, cannot decide; the tighter one from the
    /// exponentials near the maximum can, and must stay an upper bound of R.
    func testRangeTermJustWithinAndJustBeyondItsTarget() {
        for kind in ["normal", "laplace", "outlier"] {
            let w = Self.sample(kind, 2003, seed: 3), wd = w.doubles
            let r = PenaltyReference.range(wd, beta: 20)
            let m = wd.map(abs).max()! / PenaltyReference.moments(wd).m2.squareRoot()
            var s = PenaltySettings([.kurtosis, .range])
            s.rangeTarget = r + 0.1
            XCTAssertGreaterThan(
                m + _log(2003) / 20, s.rangeTarget, "\(kind): the first bound does not decide")
            let within = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
            XCTAssertLessThanOrEqual(within.range, s.rangeTarget, kind)
            XCTAssertGreaterThan(
                within.range, r + 1e-6,
                "\(kind): the bound, not R itself: no exponentials over the whole group")
            XCTAssertEqual(within.values(s)[.range], 0)
            checkGradient(
                w, [.kurtosis: 1, .range: 1], { $0.rangeTarget = r + 0.1 },
                label: "range within its target, \(kind)")
            // Deferred, the band comes from the gradient pass. With the target between max s and
            // R (its exponentials ≥ 1: Z_T < Z) the band's bound fails for sure: the range term's
            // gradient follows in a pass of its own (`checkGradient` compares both).
            XCTAssertNotNil(w.withUnsafeBufferPointer { Penalties.evaluate($0, s, deferring: true) }.rangeBand)
            // (The outlier's R is within rounding of max s: no band there.)
            s.rangeTarget = (m + r) / 2
            let between = w.withUnsafeBufferPointer { Penalties.evaluate($0, s, deferring: true) }
            XCTAssertEqual(between.rangeBand != nil, kind != "outlier", kind)
            checkGradient(
                w, [.kurtosis: 1, .range: 1], { $0.rangeTarget = (m + r) / 2 },
                label: "range between max s and R, \(kind)")
            s.rangeTarget = r - 0.02
            let beyond = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
            XCTAssertEqual(beyond.range, r, accuracy: 1e-5, kind)
            checkGradient(
                w, [.kurtosis: 1, .range: 1], { $0.rangeTarget = r - 0.02 },
                label: "range beyond its target, \(kind)")
        }
    }

    /// Where the range term's tighter bound takes a pass, that pass also sums the quantisation
    /// error: the same sums, to the bit, as the quantisation term's own pass, whether the bound
    /// then decides (within the target) or not (beyond it, when R is summed exactly as well).
    func testQuantisationSumsFromTheRangeBoundPassEqualTheirOwnPass() {
        for kind in ["normal", "laplace", "outlier"] {
            let w = Self.sample(kind, 2003, seed: 3)
            let r = PenaltyReference.range(w.doubles, beta: 20)
            for (target, decides) in [(r + 0.1, true), (r - 0.02, false)] {
                var s = PenaltySettings([.kurtosis, .range, .quantError])
                s.rangeTarget = target
                let both = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
                s.terms = [.kurtosis, .quantError]
                let alone = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
                let label = "\(kind), range target \(target)"
                XCTAssertEqual(both.rangeExponentials.isEmpty, decides, label)
                XCTAssertGreaterThan(alone.quantError, 0, label)
                XCTAssertEqual(both.quantError, alone.quantError, label)
                XCTAssertEqual(both.quantCross, alone.quantCross, label)
                XCTAssertEqual(both.argMax, alone.argMax, label)
            }
        }
    }

    func testQuantisationErrorGradient() {
        for kind in Self.distributions {
            for bits in [2, 3, 4, 8] {
                for relative in [true, false] {
                    let w = Self.sample(kind, 515, seed: 4)
                    if relative
                        && abs(PenaltyReference.quantError(w.doubles, bits: bits, relative: true) - 1) < 1e-9
                    {
                        // Every weight but the maximum rounds to 0: E' is 1, its worst, and flat there.
                        var s = PenaltySettings([.quantError])
                        s.quantErrorBits = bits
                        let st = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
                        XCTAssertEqual(st.values(s)[.quantError]!, 1, accuracy: 1e-6)
                        var g = [Float](repeating: 0, count: w.count)
                        _ = w.withUnsafeBufferPointer { wp in
                            g.withUnsafeMutableBufferPointer {
                                Penalties.addGradient(wp, $0, st, s, scales: [.quantError: 1])
                            }
                        }
                        XCTAssertLessThan(g.map(abs).max()!, 1e-6, "\(kind) \(bits) bits")
                        continue
                    }
                    checkGradient(
                        Self.sample(kind, 515, seed: 4), [.quantError: 2],
                        {
                            $0.quantErrorBits = bits; $0.quantErrorRelative = relative
                        },
                        label: "quant_error \(kind) \(bits) bits, relative \(relative)")
                }
            }
        }
    }

    /// The failure the relative form fixes: one weight grown until the step swallows the rest (all
    /// of them round to 0) makes the error in steps smaller — the term rewards collapse — while
    /// the relative error Σ(w − ŵ)²/Σw² grows toward 1, its worst.
    func testRelativeQuantisationErrorDoesNotRewardCollapse() {
        let w = Self.sample("normal", 1000, seed: 6).doubles
        var collapsed = w
        let top = w.indices.max { abs(w[$0]) < abs(w[$1]) }!
        collapsed[top] *= 6
        for bits in [2, 3] {
            let steps = (
                PenaltyReference.quantError(w, bits: bits), PenaltyReference.quantError(collapsed, bits: bits)
            )
            XCTAssertLessThan(steps.1, steps.0, "\(bits) bits: in steps, collapse scores better")
            let relative = (
                PenaltyReference.quantError(w, bits: bits, relative: true),
                PenaltyReference.quantError(collapsed, bits: bits, relative: true)
            )
            XCTAssertGreaterThan(relative.1, relative.0, "\(bits) bits: relative, collapse scores worse")
            XCTAssertLessThanOrEqual(relative.1, 1)
        }
        // Scale-free: the same shape at any size has the same relative error.
        XCTAssertEqual(
            PenaltyReference.quantError(w.map { $0 * 7 }, bits: 3, relative: true),
            PenaltyReference.quantError(w, bits: 3, relative: true), accuracy: 1e-12)
    }

    func testAllTermsTogetherAndL2() {
        for kind in Self.distributions {
            checkGradient(
                Self.sample(kind, 777, seed: 5),
                [.kurtosis: 1, .skewness: 0.5, .range: 0.3, .quantError: 0.2, .l2: 0.01],
                { $0.rangeTarget = 1.5 }, label: "all \(kind)")
        }
    }

    /// With the error in steps, `evaluate` may leave the quantisation sums to the gradient pass:
    /// its sums, value and gradient then equal those of the separate sums pass (which the gradient
    /// pass does not repeat), whatever else is on.
    func testQuantisationSumsFromTheGradientPassEqualTheSumsPass() {
        for terms in [[PenaltyTerm.quantError], [.quantError, .kurtosis], PenaltyTerm.allCases] {
            var s = PenaltySettings(Set(terms))
            s.quantErrorRelative = false; s.quantErrorBits = 4; s.rangeTarget = 1.0
            let scales = Dictionary(uniqueKeysWithValues: terms.map { ($0, 0.3) })
            let w = Self.sample("skewed", 5_003, seed: 7)
            func run(pending: Bool) -> (PenaltyState, [Float]) {
                var g = [Float](repeating: 0, count: w.count)
                let st = w.withUnsafeBufferPointer { wp in
                    g.withUnsafeMutableBufferPointer { gp in
                        let first = Penalties.evaluate(wp, s, deferring: pending)
                        XCTAssertEqual(first.quantSumsPending, pending)
                        return Penalties.addGradient(wp, gp, first, s, scales: scales)
                    }
                }
                return (st, g)
            }
            let (separate, gSeparate) = run(pending: false), (inPass, gInPass) = run(pending: true)
            XCTAssertFalse(inPass.quantSumsPending)
            XCTAssertEqual(
                inPass.quantError, separate.quantError, accuracy: 1e-6 * separate.quantError, "\(terms)")
            XCTAssertEqual(inPass.quantCross, separate.quantCross, accuracy: 1e-6 * abs(separate.quantCross))
            XCTAssertGreaterThan(separate.quantError, 0)
            XCTAssertEqual(inPass.argMax, separate.argMax)
            XCTAssertEqual(gInPass, gSeparate, "\(terms)")
        }
    }

    /// At ties the straight-through residual is that of the deployed rounding (half away from
    /// zero): u = 0.5 → −0.5, u = −2.5 → +0.5, in the vector lanes and in the scalar tail alike.
    func testQuantisationResidualAtTiesFollowsHalfAwayRounding() {
        var s = PenaltySettings([.quantError])
        s.quantErrorBits = 3  // qmax = 3
        s.quantErrorRelative = false  // the gradient is the residual's multiple checked below
        let u: [Float] = [
            0.5, -0.5, 1.5, -2.5, 0.25, -1.75, 2.5, 0.1, -1.5, 3, 0.5, -0.5, 2.5, -2.5, 1.2, -0.9, 0.5
        ]
        let w = u.map { $0 / 3 }, us = w.map { $0 * 3 }  // max|w| = 1: u = 3w
        XCTAssertGreaterThanOrEqual(
            us.filter { $0 - $0.rounded(.down) == 0.5 }.count, 8, "the fixture has ties")
        let st = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
        var g = [Float](repeating: 0, count: w.count)
        _ = w.withUnsafeBufferPointer { wp in
            g.withUnsafeMutableBufferPointer { gp in
                Penalties.addGradient(wp, gp, st, s, scales: [.quantError: 1])
            }
        }
        for (j, x) in us.enumerated() where j != st.argMax {
            let residual = x - x.rounded(.toNearestOrAwayFromZero)
            XCTAssertEqual(g[j], 2 / Float(w.count) * 3 * residual, accuracy: 1e-6, "u = \(x)")
        }
        XCTAssertEqual(st.argMax, 9)
    }

    /// The lane-wise residual (`qs_round_away16`, a truncation without a branch) against the
    /// scalar rounding half away from zero, bit for bit, over its domain |u| < 2²² (the
    /// quantisation sums meet |u| ≤ qmax): ties, their neighbours, the Float just below ½, signed
    /// zeros, the top of the domain, where Floats are ¼ apart, and random values of every size.
    func testLaneRoundingResidualEqualsScalarRoundingHalfAway() {
        let top = Float(4_194_304)  // 2²²
        var values: [Float] = [
            0, -Float(0), 0.5, Float(0.5).nextDown, Float(0.5).nextUp, 1, top.nextDown, top - 0.5, top - 1.5
        ]
        for k in 0..<40 {
            let tie = Float(k) + 0.5
            values += [tie, tie.nextUp, tie.nextDown, Float(k), Float(k).nextUp, Float(k).nextDown]
        }
        var rng = SeededRandom(seed: 11)
        for _ in 0..<2000 { values.append(rng.uniform(-1, 1) * Float(_pow(10, Double(rng.uniform(-8, 6))))) }
        values += values.map { -$0 }
        while values.count % 16 != 0 { values.append(0.25) }
        for start in stride(from: 0, to: values.count, by: 16) {
            let r = values.withUnsafeBufferPointer { roundingResidual(loadLanes($0.baseAddress! + start)) }
            for j in 0..<16 {
                let u = values[start + j], expected = u - u.rounded(.toNearestOrAwayFromZero)
                XCTAssertEqual(r[j].bitPattern, expected.bitPattern, "u = \(u): \(r[j]) against \(expected)")
            }
        }
    }

    /// `qshape bench`'s per-term cost: every term, the forced range term and both "all" cases,
    /// each a real (positive) time on the example network's weight count.
    func testBenchPenaltyCostsCoverEveryTerm() throws {
        let costs = try BenchWorkflow.penaltyCosts(
            network: "fashion-mlp", layers: try BenchWorkflow.networks()[0].layers)
        XCTAssertEqual(
            costs.map(\.term),
            PenaltyTerm.allCases.map(\.rawValue)
                + ["range on every weight", "all", "all, range on every weight"])
        for c in costs {
            XCTAssertEqual(c.weights, 784 * 256 + 256 * 128 + 128 * 10)
            XCTAssertGreaterThan(c.millisecondsPerStep, 0, c.term)
        }
    }

    /// `qshape bench`'s shaping overhead, in a few short chunks: one ratio per turn, the median
    /// between its quartiles, and real rates and penalty times for all three trainings.
    func testBenchShapingOverheadFromAlternatingChunks() throws {
        let mlp = try BenchWorkflow.networks()[0]
        let o = try BenchWorkflow.shapingOverhead(
            network: mlp.name, layers: mlp.layers, terms: "kurtosis",
            config: BenchWorkflow.shapingTerms([.kurtosis]), chunks: (steps: 2, turns: 3))
        XCTAssertEqual(o.network, "fashion-mlp")
        XCTAssertEqual(o.chunkPairs, 3)
        XCTAssertEqual(o.stepsPerChunk, 2)
        XCTAssertEqual(o.overheadQuartiles.count, 2)
        XCTAssertLessThanOrEqual(o.overheadQuartiles[0], o.overhead)
        XCTAssertLessThanOrEqual(o.overhead, o.overheadQuartiles[1])
        XCTAssertGreaterThan(o.overhead, -1)
        XCTAssertGreaterThan(o.serialOverhead, -1)
        for rate in [o.unshapedSamplesPerSecond, o.shapedSamplesPerSecond, o.serialShapedSamplesPerSecond] {
            XCTAssertTrue(rate.isFinite && rate > 0, "\(rate)")
        }
        XCTAssertGreaterThan(o.penaltyMillisecondsPerStep, 0)
    }

    /// The interpolated quantiles of the bench's ratios.
    func testBenchQuantile() {
        XCTAssertEqual(BenchWorkflow.quantile([1, 2, 3, 4], 0.5), 2.5)
        XCTAssertEqual(BenchWorkflow.quantile([1, 2, 3, 4], 0.25), 1.75)
        XCTAssertEqual(BenchWorkflow.quantile([1, 2, 3, 4], 0.75), 3.25)
        XCTAssertEqual(BenchWorkflow.quantile([1, 2, 3, 4], 1), 4)
        XCTAssertEqual(BenchWorkflow.quantile([1, 2, 3, 4], 0), 1)
        XCTAssertEqual(BenchWorkflow.quantile([7], 0.5), 7)
    }

    /// The bench's clock around the loss term passes values and gradients through unchanged.
    func testTimedLossTermIsTransparent() throws {
        let specs: [LayerSpec] = [.flatten, .dense(inFeatures: 20, outFeatures: 7, bias: true)]
        let config = BenchWorkflow.shapingTerms(PenaltyTerm.allCases)
        let a = try Sequential(specs: specs, inputShape: [20], seed: 3),
            b = try Sequential(specs: specs, inputShape: [20], seed: 3)
        let plain = ShapingLossTerm(config, model: a),
            timed = TimedLossTerm(ShapingLossTerm(config, model: b))
        XCTAssertEqual(timed.millisecondsPerCall, 0)
        for _ in 0..<3 {
            a.zeroGradients(); b.zeroGradients()
            XCTAssertEqual(plain.addGradients(model: a, epoch: 1), timed.addGradients(model: b, epoch: 1))
            XCTAssertEqual(a.namedState[0].parameter.grad.data, b.namedState[0].parameter.grad.data)
        }
        XCTAssertGreaterThan(timed.millisecondsPerCall, 0)
        timed.reset()  // after the bench's warm-up
        XCTAssertEqual(timed.millisecondsPerCall, 0)
        _ = timed.addGradients(model: b, epoch: 1)
        XCTAssertGreaterThan(timed.millisecondsPerCall, 0)
    }

    func testZeroVarianceIsFiniteAndPushesNothing() {
        let s = PenaltySettings([.kurtosis, .skewness, .range, .quantError])
        for w in [[Float](repeating: 0.25, count: 33), [Float](repeating: 0, count: 8)] {
            let st = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
            for v in st.values(s).values { XCTAssertTrue(v.isFinite) }
            var g = [Float](repeating: 0, count: w.count)
            _ = w.withUnsafeBufferPointer { wp in
                g.withUnsafeMutableBufferPointer { gp in
                    Penalties.addGradient(
                        wp, gp, st, s, scales: [.kurtosis: 1, .skewness: 1, .range: 1, .quantError: 1])
                }
            }
            XCTAssertEqual(g, [Float](repeating: 0, count: w.count))
        }
    }

    func testMeanHintDoesNotChangeTheResult() {
        let s = PenaltySettings([.kurtosis])
        let w = Self.sample("skewed", 3000, seed: 6)
        let exact = w.withUnsafeBufferPointer { Penalties.evaluate($0, s) }
        for hint: Float in [0, 0.05, -0.01] {  // the previous step's mean is close; 0 is the worst fallback
            let st = w.withUnsafeBufferPointer { Penalties.evaluate($0, s, meanHint: hint) }
            XCTAssertEqual(st.kurtosis, exact.kurtosis, accuracy: 1e-3 * exact.kurtosis)
            XCTAssertEqual(st.mean, exact.mean, accuracy: 1e-7)
        }
    }

    /// The whole loss term: per-channel scope, aggregation over layers and λ, against the reference.
    func testLossTermAggregatesChannelsAndLayers() throws {
        let model = try Sequential(
            specs: [
                .flatten, .dense(inFeatures: 12, outFeatures: 5, bias: true), .relu,
                .dense(inFeatures: nil, outFeatures: 3, bias: true)
            ], inputShape: [12], seed: 4)
        for aggregate in ShapingConfig.Aggregate.allCases {
            var c = ShapingConfig()
            c.terms[.kurtosis] = .init(weight: 0.8, target: 2.0, scope: .channel, aggregate: aggregate)
            c.terms[.skewness] = .init(weight: 0.3, target: 0, scope: .tensor, aggregate: aggregate)
            // Relative (the default): but for `max`, its sums come from the gradient pass, and its
            // part −K·w, which needs them, is left to the optimiser (`gradientDecay`).
            c.terms[.quantError] = .init(weight: 0.5, target: nil, scope: .channel, aggregate: aggregate)
            c.quantErrorBits = 3
            let term = ShapingLossTerm(c, model: model)
            model.zeroGradients()
            let values = term.addGradients(model: model, epoch: 1)
            let w1 = model.namedState[0].parameter, w3 = model.namedState[2].parameter
            for w in [w1, w3] {
                XCTAssertEqual(w.gradientDecay.count, aggregate == .max ? 0 : w.value.shape[0], "\(aggregate)")
                w.resolveGradientDecay()
                XCTAssertEqual(w.gradientDecay, [])
            }
            func layerKurt(_ w: [Double], rows: Int) -> Double {
                let size = w.count / rows
                return (0..<rows).map { r in
                    let k = PenaltyReference.kurtosis(Array(w[(r * size)..<((r + 1) * size)]));
                    return (k - 2) * (k - 2)
                }
                .reduce(0, +) / Double(rows)
            }
            func layerSkew(_ w: [Double]) -> Double { let s = PenaltyReference.skewness(w); return s * s }
            func layerQuant(_ w: [Double], rows: Int) -> Double {
                let size = w.count / rows
                return (0..<rows).map { r in
                    PenaltyReference.quantError(
                        Array(w[(r * size)..<((r + 1) * size)]), bits: 3, relative: true)
                }
                .reduce(0, +) / Double(rows)
            }
            func agg(_ a: Double, _ b: Double) -> Double {
                switch aggregate {
                case .mean: (a + b) / 2;
                case .sum: a + b;
                case .max: max(a, b)
                }
            }
            func total(_ a: [Double], _ b: [Double]) -> Double {
                0.8 * agg(layerKurt(a, rows: 5), layerKurt(b, rows: 3)) + 0.3
                    * agg(layerSkew(a), layerSkew(b))
                    + 0.5 * agg(layerQuant(a, rows: 5), layerQuant(b, rows: 3))
            }
            let a = w1.value.data.doubles, b = w3.value.data.doubles
            XCTAssertEqual(
                (values["kurtosis"] ?? 0) + (values["skewness"] ?? 0) + (values["quant_error"] ?? 0),
                total(a, b), accuracy: 1e-6)
            XCTAssertEqual(
                values["quant_error"] ?? 0, 0.5 * agg(layerQuant(a, rows: 5), layerQuant(b, rows: 3)),
                accuracy: 1e-7)
            let na = numericGradient(a, h: 1e-7) { total($0, b) },
                nb = numericGradient(b, h: 1e-7) { total(a, $0) }
            XCTAssertLessThan(relativeError(w1.grad.data, na), 1e-4, "\(aggregate) layer 1")
            XCTAssertLessThan(relativeError(w3.grad.data, nb), 1e-4, "\(aggregate) layer 3")
        }
    }

    /// The loss term writes its layers' weight gradients whatever they held (the trainer does not
    /// zero them first: `setsGradients`), with two scopes on a layer (the first sets, the second
    /// adds), leaves every other gradient alone, and writes zeros while the warm-up has not begun.
    func testLossTermSetsItsLayersGradients() throws {
        let specs: [LayerSpec] = [
            .flatten, .dense(inFeatures: 12, outFeatures: 5, bias: true), .relu,
            .dense(inFeatures: nil, outFeatures: 3, bias: true)
        ]
        var c = ShapingConfig()
        c.terms[.kurtosis] = .init(weight: 0.8, target: 2.0, scope: .tensor, aggregate: .mean)
        c.terms[.skewness] = .init(weight: 0.3, target: 0, scope: .channel, aggregate: .mean)
        c.terms[.quantError] = .init(weight: 0.5, target: nil, scope: .channel, aggregate: .mean)
        let a = try Sequential(specs: specs, inputShape: [12], seed: 4),
            b = try Sequential(specs: specs, inputShape: [12], seed: 4)
        let ta = ShapingLossTerm(c, model: a), tb = ShapingLossTerm(c, model: b)
        XCTAssertEqual(tb.setsGradients.map(\.name), ["weight", "weight"])
        XCTAssertTrue(zip(tb.setsGradients, [b.layers[1], b.layers[3]]).allSatisfy { $0 === $1.state[0] })
        func scribble(_ m: Sequential) -> [[Float]] {
            let before = m.trainableParameters.map { p in (0..<p.grad.count).map { Float($0 % 7) - 3 } }
            for (p, g) in zip(m.trainableParameters, before) { p.grad = Tensor(shape: p.grad.shape, data: g) }
            return before
        }
        for epoch in [1.0, 2.0] {
            a.zeroGradients()
            let before = scribble(b)
            XCTAssertEqual(ta.addGradients(model: a, epoch: epoch), tb.addGradients(model: b, epoch: epoch))
            for (pa, (pb, g)) in zip(a.trainableParameters, zip(b.trainableParameters, before)) {
                XCTAssertEqual(pb.grad.data, pa.role == .weight ? pa.grad.data : g, pa.name)
            }
        }
        c.warmupEpochs = 2; c.startEpoch = 1
        let late = ShapingLossTerm(c, model: b)
        let before = scribble(b)
        XCTAssertEqual(late.addGradients(model: b, epoch: 0.5), [:])
        for (p, g) in zip(b.trainableParameters, before) {
            XCTAssertEqual(p.grad.data, p.role == .weight ? [Float](repeating: 0, count: p.grad.count) : g)
        }
    }

    /// The loss term's table of per-term values behaves as the dictionary it replaces.
    func testTermTableActsAsADictionary() {
        var rng = SeededRandom(seed: 8)
        for _ in 0..<50 {
            var d: [PenaltyTerm: Double] = [:]
            var t = TermTable()
            for _ in 0..<8 {
                let term = PenaltyTerm.ordered[rng.below(5)], x = Double(rng.uniform(-2, 2))
                switch rng.below(3) {
                case 0: d[term] = x; t[term] = x
                case 1: d[term] = nil; t[term] = nil
                default: d[term, default: 1] += x; t[term, default: 1] += x
                }
            }
            var seen: [PenaltyTerm: Double] = [:], order: [PenaltyTerm] = []
            t.forEach {
                seen[$0] = $1; order.append($0)
            }
            XCTAssertEqual(order, PenaltyTerm.ordered.filter { d[$0] != nil })
            XCTAssertEqual(seen, d)
            for term in PenaltyTerm.ordered { XCTAssertEqual(t[term], d[term]) }
            XCTAssertEqual(t, TermTable(d))
            XCTAssertEqual(t.mapValues { $0 * 3 }, TermTable(d.mapValues { $0 * 3 }))
            XCTAssertEqual(t.filter { $0 != .range }, TermTable(d.filter { $0.key != .range }))
            XCTAssertEqual(t == TermTable(), d.isEmpty)
        }
        let settings = PenaltySettings([.kurtosis, .l2])
        XCTAssertTrue(settings.has(.kurtosis) && settings.has(.l2) && !settings.has(.range))
        var other = settings
        other.terms.insert(.range)
        XCTAssertTrue(other.has(.range))
        other.terms = []
        XCTAssertFalse(other.isActive || other.has(.kurtosis))
    }

    func testWarmUpAndStartEpoch() {
        var c = ShapingConfig()
        c.startEpoch = 2; c.warmupEpochs = 4
        XCTAssertEqual(c.rampFactor(epoch: 1.9), 0)
        XCTAssertEqual(c.rampFactor(epoch: 3), 0.25)
        XCTAssertEqual(c.rampFactor(epoch: 6), 1)
        XCTAssertEqual(c.rampFactor(epoch: 9), 1)
    }
}
