// Tests: optimiser updates against PyTorch's formulas worked by hand.
import XCTest
import Tensors
import NeuralNet
import Training

/// Optimiser updates against the formulas of PyTorch's optimisers, worked by hand in Double.
final class OptimizerTests: XCTestCase {
    func parameter(_ w: [Float], grad: [Float]) -> Parameter {
        let p = Parameter("weight", role: .weight, value: Tensor(shape: [w.count], data: w))
        p.grad = Tensor(shape: [grad.count], data: grad)
        return p
    }

    func testSGDWithMomentumNesterovAndWeightDecay() {
        var c = OptimizerConfig()
        c.kind = .sgd; c.momentum = 0.9; c.nesterov = true; c.weightDecay = 0.1
        let p = parameter([1.0], grad: [0.5])
        let opt = Optimizer(c, parameters: [p])
        // step 1: g = 0.5 + 0.1·1 = 0.6, b = g = 0.6, d = g + 0.9·b = 1.14, w = 1 − 0.1·1.14
        opt.step(learningRate: 0.1)
        XCTAssertEqual(Double(p.value.data[0]), 0.886, accuracy: 1e-6)
        // step 2: g = 0.5 + 0.0886 = 0.5886, b = 0.9·0.6 + 0.5886 = 1.1286, d = 0.5886 + 0.9·1.1286
        opt.step(learningRate: 0.1)
        XCTAssertEqual(Double(p.value.data[0]), 0.886 - 0.1 * (0.5886 + 0.9 * 1.1286), accuracy: 1e-6)
    }

    func testAdamAndAdamWFirstStepsMatchTheFormula() {
        // 37 weights: two runs of 16 lanes and a scalar tail of 5.
        let w0: [Float] = (0..<37).map { i in
            let sign: Float = i % 2 == 0 ? 2 : -1
            return sign * Float(1 + i) / 10
        }
        let g0: [Float] = (0..<37).map { i in
            let sign: Float = i % 3 == 0 ? 0.3 : -0.2
            return sign * Float(37 - i) / 20
        }
        for kind in [OptimizerConfig.Kind.adam, .adamw] {
            var c = OptimizerConfig()
            c.kind = kind; c.weightDecay = 0.01
            let p = parameter(w0, grad: g0)
            let opt = Optimizer(c, parameters: [p])
            var w = w0.map(Double.init), m = [Double](repeating: 0, count: 37), v = m
            for t in 1...3 {
                opt.step(learningRate: 0.01)
                for i in 0..<37 {
                    var g = Double(g0[i])
                    if kind == .adam { g += 0.01 * w[i] } else { w[i] *= 1 - 0.01 * 0.01 }
                    m[i] = 0.9 * m[i] + 0.1 * g
                    v[i] = 0.999 * v[i] + 0.001 * g * g
                    let mh = m[i] / (1 - _pow(0.9, Double(t))), vh = v[i] / (1 - _pow(0.999, Double(t)))
                    w[i] -= 0.01 * mh / (vh.squareRoot() + 1e-8)
                    XCTAssertEqual(Double(p.value.data[i]), w[i], accuracy: 1e-5, "\(kind) step \(t)")
                }
            }
        }
    }

    /// A parameter's `gradientDecay` (one factor per group of weights) is added to the gradient as
    /// L2 is: every optimiser's step equals the step on the gradient with the factors written in
    /// (`resolveGradientDecay`), bit for bit, and with weight decay as well to rounding. The
    /// groups (7 of 2,900) cut the update's 8,192-value blocks off the 16 lanes; the factors are
    /// emptied by the step.
    func testGradientDecayIsAddedAsL2() {
        let n = 7 * 2900
        var rng = SeededRandom(seed: 21)
        let w0 = (0..<n).map { _ in rng.uniform(-1, 1) }, g0 = (0..<n).map { _ in rng.uniform(-0.1, 0.1) }
        let factors: [Float] = [0.3, -0.2, 0, 1.5, -0.01, 0.07, -2]
        for kind in OptimizerConfig.Kind.allCases {
            for weightDecay in [0, 0.01] {
                var c = OptimizerConfig()
                c.kind = kind; c.momentum = 0.9; c.weightDecay = weightDecay
                let folded = parameter(w0, grad: g0), written = parameter(w0, grad: g0),
                    plain = parameter(w0, grad: g0)
                let a = Optimizer(c, parameters: [folded]), b = Optimizer(c, parameters: [written])
                let without = Optimizer(c, parameters: [plain])
                for _ in 0..<3 {
                    without.step(learningRate: 0.01)
                    folded.grad = Tensor(shape: [n], data: g0); folded.gradientDecay = factors
                    written.grad = Tensor(shape: [n], data: g0); written.gradientDecay = factors
                    written.resolveGradientDecay()
                    a.step(learningRate: 0.01); b.step(learningRate: 0.01)
                    XCTAssertEqual(folded.gradientDecay, [])
                }
                let label = "\(kind), weight decay \(weightDecay)"
                if weightDecay == 0 {
                    XCTAssertEqual(folded.value.data, written.value.data, label)
                } else {
                    let gap = zip(folded.value.data, written.value.data).map { abs($0 - $1) }.max()!
                    XCTAssertLessThan(gap, 1e-6, label)
                }
                // The factors move the weights: group 3's (1.5) by more than rounding.
                XCTAssertGreaterThan(abs(folded.value.data[3 * 2900 + 5] - plain.value.data[3 * 2900 + 5]), 1e-5, label)
                XCTAssertEqual(folded.value.data[2 * 2900 + 5], plain.value.data[2 * 2900 + 5], label)
            }
        }
    }

    /// Clipping measures the full gradient: it writes a pending `gradientDecay` in first.
    func testGradientClippingWritesTheDecayFirst() {
        let p = parameter([3, 4], grad: [0, 0])
        p.gradientDecay = [1]
        XCTAssertEqual(clipGradientNorm([p], maxNorm: 100), 5, accuracy: 1e-6)
        XCTAssertEqual(p.grad.data, [3, 4])
        XCTAssertEqual(p.gradientDecay, [])
    }

    func testZeroingAGradientClearsItsDecay() {
        // A factor left by a step whose update never ran must not reach the next step's update.
        let p = parameter([3, 4], grad: [1, 2])
        p.gradientDecay = [1]
        p.zeroGradient()
        XCTAssertEqual(p.grad.data, [0, 0])
        XCTAssertEqual(p.gradientDecay, [])
        var c = OptimizerConfig()
        c.kind = .sgd
        Optimizer(c, parameters: [p]).step(learningRate: 1)
        XCTAssertEqual(p.value.data, [3, 4])
    }

    func testGradientClippingScalesToTheNorm() {
        let a = parameter([0, 0], grad: [3, 0]), b = parameter([0], grad: [4])
        let norm = clipGradientNorm([a, b], maxNorm: 1)
        XCTAssertEqual(norm, 5, accuracy: 1e-9)
        XCTAssertEqual(Double(a.grad.data[0]), 0.6, accuracy: 1e-5)
        XCTAssertEqual(Double(b.grad.data[0]), 0.8, accuracy: 1e-5)
        let c = parameter([0], grad: [0.5])
        clipGradientNorm([c], maxNorm: 1)
        XCTAssertEqual(c.grad.data[0], 0.5)
    }

    func testLearningRateSchedules() {
        var s = LearningRateSchedule()
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 3.5, totalEpochs: 10), 0.1)
        s.kind = .step; s.stepEpochs = 2; s.gamma = 0.5
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 1.9, totalEpochs: 10), 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 4.0, totalEpochs: 10), 0.025, accuracy: 1e-12)
        s.kind = .cosine; s.warmupEpochs = 2; s.minLearningRate = 0.01
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 1, totalEpochs: 10), 0.05, accuracy: 1e-12)
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 2, totalEpochs: 10), 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 6, totalEpochs: 10), 0.055, accuracy: 1e-12)
        XCTAssertEqual(s.learningRate(base: 0.1, epoch: 10, totalEpochs: 10), 0.01, accuracy: 1e-12)
    }
}
