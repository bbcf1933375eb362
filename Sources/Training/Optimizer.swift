// SGD (momentum, Nesterov), Adam and AdamW with PyTorch's semantics, and gradient clipping.
import Tensors
import NeuralNet
import CVectorMath

/// Optimiser settings, with PyTorch's semantics and defaults.
public struct OptimizerConfig: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable { case sgd, adam, adamw }
    public var kind: Kind = .adam
    public var learningRate: Double = 1e-3
    public var momentum: Double = 0
    public var nesterov = false
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8
    /// L2 added to the gradient (SGD, Adam) or decoupled decay (AdamW).
    public var weightDecay: Double = 0
    public init() {}
}

/// Updates parameters from their gradients.
///
///     SGD:   g ← ∇ + λ·p;  b ← μ·b + g;  p ← p − lr·(Nesterov ? g + μ·b : b)
///     Adam:  g ← ∇ + λ·p;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
///            p ← p − lr·m̂/(√v̂ + ε),  m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
///     AdamW: p ← p·(1 − lr·λ), then Adam with λ = 0
///
/// A parameter's `gradientDecay` (a loss term's gradient part c·p) is added to g as λ·p is, then
/// emptied.
public final class Optimizer {
    public let config: OptimizerConfig
    private let parameters: [Parameter]
    private var first: [[Float]]
    private var second: [[Float]]
    private var step = 0

    public init(_ config: OptimizerConfig, parameters: [Parameter]) {
        self.config = config
        self.parameters = parameters
        first = parameters.map { [Float](repeating: 0, count: $0.value.count) }
        second = config.kind == .sgd ? [] : parameters.map { [Float](repeating: 0, count: $0.value.count) }
    }

    /// What the optimiser carries from step to step (checkpoints): the step count and its buffers,
    /// one per parameter (SGD: momentum, `second` empty; Adam: first and second moments).
    public struct State: Sendable {
        public var step: Int
        public var first: [[Float]], second: [[Float]]
        public init(step: Int, first: [[Float]], second: [[Float]]) {
            self.step = step; self.first = first; self.second = second
        }
    }

    public var state: State { State(step: step, first: first, second: second) }

    /// Continues from a saved state; false (nothing changed) when it does not fit the parameters.
    public func restore(_ s: State) -> Bool {
        let counts = parameters.map(\.value.count)
        guard s.step >= 0, s.first.map(\.count) == counts,
            s.second.map(\.count) == (config.kind == .sgd ? [] : counts)
        else { return false }
        step = s.step; first = s.first; second = s.second
        return true
    }

    public func step(learningRate lr: Double) {
        step += 1
        for (i, p) in parameters.enumerated() {
            switch config.kind {
            case .sgd: sgd(p, &first[i], lr: Float(lr))
            case .adam, .adamw: adam(p, &first[i], &second[i], lr: lr)
            }
        }
    }

    private func sgd(_ p: Parameter, _ buf: inout [Float], lr: Float) {
        let mu = Float(config.momentum), wd = Float(config.weightDecay), nesterov = config.nesterov
        let firstStep = step == 1
        p.grad.withUnsafeBufferPointer { g in
            p.value.withUnsafeMutableBufferPointer { w in
                buf.withUnsafeMutableBufferPointer { b in
                    let n = w.count
                    let (g, w, b) = (g.baseAddress!, w.baseAddress!, b.baseAddress!)
                    forEachBlock(n, decay: p.gradientDecay) { run, extra in
                        for j in run {
                            var d = g[j] + (wd + extra) * w[j]
                            if mu != 0 {
                                b[j] = firstStep ? d : mu * b[j] + d
                                d = nesterov ? d + mu * b[j] : b[j]
                            }
                            w[j] -= lr * d
                        }
                    }
                }
            }
        }
        p.gradientDecay = []
    }

    private func adam(_ p: Parameter, _ m: inout [Float], _ v: inout [Float], lr: Double) {
        let b1 = Float(config.beta1), b2 = Float(config.beta2), eps = Float(config.eps)
        let decoupled = config.kind == .adamw
        let wd = Float(config.weightDecay)
        let bc1 = 1 - _pow(config.beta1, Double(step)), bc2 = 1 - _pow(config.beta2, Double(step))
        let stepSize = Float(lr / bc1), invSqrtBC2 = Float(1 / bc2.squareRoot())
        let decay = decoupled ? Float(1 - lr * config.weightDecay) : 1
        p.grad.withUnsafeBufferPointer { g in
            p.value.withUnsafeMutableBufferPointer { w in
                m.withUnsafeMutableBufferPointer { mp in
                    v.withUnsafeMutableBufferPointer { vp in
                        // L2 (Adam) adds wd·w to the gradient; decoupled decay (AdamW) scales w first.
                        let l2 = decoupled ? 0 : wd
                        let n = w.count
                        let (w, g, m, v) = (w.baseAddress!, g.baseAddress!, mp.baseAddress!, vp.baseAddress!)
                        forEachBlock(n, decay: p.gradientDecay) { run, extra in
                            let start = run.lowerBound
                            adamUpdate(
                                count: run.count, w: w + start, g: g + start, m: m + start, v: v + start,
                                b1: b1, b2: b2, eps: eps, l2: l2 + extra, decay: decay, stepSize: stepSize,
                                invSqrtBC2: invSqrtBC2)
                        }
                    }
                }
            }
        }
        p.gradientDecay = []
    }

    /// `body(run, extra)` over the update's blocks (`updateBlock`, shared with the current
    /// `BlockSharing`'s helpers), each cut where the parameter's `gradientDecay` groups change:
    /// `extra` is the run's group factor, added to the gradient as L2 is (0 when there is none).
    private func forEachBlock(_ n: Int, decay: [Float], _ body: (Range<Int>, Float) -> Void) {
        decay.withUnsafeBufferPointer { decay in
            let groupSize = decay.isEmpty ? n : n / decay.count
            BlockSharing.forEachBlock(of: 0..<n, size: updateBlock) { _, block in
                guard !decay.isEmpty else { return body(block, 0) }
                var i = block.lowerBound
                while i < block.upperBound {
                    let group = i / groupSize, end = min(block.upperBound, (group + 1) * groupSize)
                    body(i..<end, decay[group])
                    i = end
                }
            }
        }
    }
}

/// Values per block of an update shared with another thread (a multiple of the 16 lanes). The
/// blocks are shared with the current `BlockSharing`'s helpers (the training loop's side thread,
/// once it has gathered the next batch); every element's update depends on that element alone,
/// so the result is the same whoever runs which block.
let updateBlock = 8192

/// Scales all gradients so their joint L2 norm is at most `maxNorm` (PyTorch
/// `clip_grad_norm_`); returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Double) -> Double {
    var sq = 0.0
    for p in parameters { p.resolveGradientDecay() }
    for p in parameters { p.grad.withUnsafeBufferPointer { g in for x in g { sq += Double(x) * Double(x) } } }
    let norm = sq.squareRoot()
    if norm > maxNorm {
        let scale = Float(maxNorm / (norm + 1e-6))
        for p in parameters {
            p.grad.withUnsafeMutableBufferPointer { g in for j in 0..<g.count { g[j] *= scale } }
        }
    }
    return norm
}

/// The Adam element update, sixteen lanes at a time (the compiler cannot prove the four buffers
/// distinct, so it would not vectorise the scalar loop), the square root as one vector
/// instruction (`qs_sqrt16`: SIMD16's own `squareRoot()` is sixteen scalar ones, and cost 5x):
///     d = g + l2·w;  w ← w·decay;  m ← β₁m + (1−β₁)d;  v ← β₂v + (1−β₂)d²;  w ← w − step·m/(√v/√bc₂ + ε)
@inline(__always)
private func adamUpdate(
    count: Int, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
    m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
    b1: Float, b2: Float, eps: Float, l2: Float, decay: Float, stepSize: Float, invSqrtBC2: Float
) {
    var j = 0
    while j + Lanes.scalarCount <= count {
        var wv = loadLanes(w + j)
        let d = loadLanes(g + j) + l2 * wv
        wv *= decay
        let mv = b1 * loadLanes(m + j) + (1 - b1) * d
        let vv = b2 * loadLanes(v + j) + (1 - b2) * d * d
        wv -= stepSize * mv / (qs_sqrt16(vv) * invSqrtBC2 + eps)
        storeLanes(mv, m + j); storeLanes(vv, v + j); storeLanes(wv, w + j)
        j += Lanes.scalarCount
    }
    while j < count {
        let d = g[j] + l2 * w[j]
        w[j] *= decay
        m[j] = b1 * m[j] + (1 - b1) * d
        v[j] = b2 * v[j] + (1 - b2) * d * d
        w[j] -= stepSize * m[j] / (v[j].squareRoot() * invSqrtBC2 + eps)
        j += 1
    }
}
