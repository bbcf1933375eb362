// Layer specs (a config's model section) and the Sequential model built from them, with PyTorch's
// initialisation and state-dict names.
import Tensors

/// What a layer is, independent of its weights: the model section of a config.
public enum LayerSpec: Equatable, Sendable {
    case dense(inFeatures: Int?, outFeatures: Int, bias: Bool)
    case conv2d(inChannels: Int?, outChannels: Int, kernel: Int, stride: Int, padding: Int, bias: Bool)
    case maxpool2d(kernel: Int, stride: Int?, padding: Int)
    case avgpool2d(kernel: Int, stride: Int?)
    case globalavgpool2d
    case relu, relu6, flatten
    case batchnorm1d(eps: Float, momentum: Float)
    case batchnorm2d(eps: Float, momentum: Float)
    case dropout(p: Float)

    /// The config's `type` name.
    /// True for the layers with a weight (dense, conv2d): the ones a config's per-layer keys name.
    public var hasWeights: Bool {
        switch self {
        case .dense, .conv2d: true
        default: false
        }
    }

    public var typeName: String {
        switch self {
        case .dense: "dense"
        case .conv2d: "conv2d"
        case .maxpool2d: "maxpool2d"
        case .avgpool2d: "avgpool2d"
        case .globalavgpool2d: "globalavgpool2d"
        case .relu: "relu"
        case .relu6: "relu6"
        case .flatten: "flatten"
        case .batchnorm1d: "batchnorm1d"
        case .batchnorm2d: "batchnorm2d"
        case .dropout: "dropout"
        }
    }
}

/// Layers applied in order (PyTorch `nn.Sequential`). State-dict names are `<index>.<name>`, the
/// index counting every layer, activations and Flatten included, exactly as PyTorch numbers them.
public final class Sequential {
    public let layers: [Layer]
    public let specs: [LayerSpec]
    /// Per-sample input shape, e.g. [1, 28, 28].
    public let inputShape: [Int]
    /// Per-sample shape after each layer.
    public let shapes: [[Int]]
    /// The layers as `forward(_:training:)` and `backward` run them: one range per convolution
    /// with the ReLU and 2×2 max pooling it computes itself (`ConvEpilogue`), one per other layer.
    public let stages: [Range<Int>]
    /// The first layer with trainable parameters: below it no layer needs an input gradient (in
    /// the MLP, Flatten alone is below the first dense layer, whose input gradient was a third of
    /// its backward pass).
    let firstTrainableLayer: Int
    /// Whether the last forward pass ran by stages (else layer by layer, for its hook): backward
    /// goes the same way.
    private var byStages = false

    /// The most layers and parameters a model may have (the examples: 10 layers, 0.4 M parameters).
    public static let maxLayers = 1_000
    public static let maxParameters = 200_000_000
    /// Activations of one sample summed over the layers (a batch holds this many per sample).
    public static let maxActivations = 4_000_000

    /// Builds the layers, checking every shape, and initialises them as PyTorch does from `seed`.
    /// Sizes are checked before anything is allocated.
    public init(specs: [LayerSpec], inputShape: [Int], seed: UInt64) throws {
        guard specs.count <= Sequential.maxLayers else {
            throw ModelError(
                "model.layers: \(specs.count) layers; QShape takes at most \(Sequential.maxLayers)")
        }
        var rng = SeededRandom(seed: seed)
        var layers: [Layer] = []
        var shapes: [[Int]] = []
        var shape = inputShape
        var parameters = 0, activations = 0
        for (index, spec) in specs.enumerated() {
            let added = Sequential.parameterCount(spec, input: shape)
            let (total, overflow) = parameters.addingReportingOverflow(added ?? Int.max)
            guard added != nil, !overflow, total <= Sequential.maxParameters else {
                throw ModelError(
                    "model.layers[\(index)] (\(spec.typeName)): the model would have more than \(Sequential.maxParameters) parameters, QShape's limit"
                )
            }
            parameters = total
            let layer = Sequential.make(spec, input: shape, index: index, seed: seed, rng: &rng)
            do {
                shape = try layer.outputShape(for: shape)
            } catch let e as ModelError {
                throw ModelError("model.layers[\(index)] (\(spec.typeName)): \(e.message)")
            }
            activations += shape.reduce(1) { $0 &* max(0, $1) }
            guard activations <= Sequential.maxActivations,
                shape.allSatisfy({ $0 <= Sequential.maxActivations })
            else {
                throw ModelError(
                    "model.layers[\(index)] (\(spec.typeName)): more than \(Sequential.maxActivations) activations per sample, QShape's limit"
                )
            }
            layers.append(layer)
            shapes.append(shape)
        }
        self.layers = layers
        self.specs = specs
        self.inputShape = inputShape
        self.shapes = shapes
        self.stages = Sequential.stages(layers)
        firstTrainableLayer = layers.firstIndex { $0.state.contains(where: \.isTrainable) } ?? layers.count
        // With convolutions, whose parts run on the two workers, the dense products run there too:
        // OpenBLAS's idle thread would spin beside the workers (Dense.productsOnWorkers).
        let convolutional = layers.contains { $0 is Conv2D }
        for case let d as Dense in layers { d.productsOnWorkers = convolutional }
    }

    /// A convolution followed by a ReLU (or ReLU6), and the 2×2, stride-2 max pooling after that
    /// if there is one, form a stage; every other layer is a stage of its own.
    static func stages(_ layers: [Layer]) -> [Range<Int>] {
        var stages: [Range<Int>] = [], i = 0
        while i < layers.count {
            var end = i + 1
            if layers[i] is Conv2D, end < layers.count, layers[end] is ClampedReLU {
                end += 1
                if end < layers.count, let p = layers[end] as? MaxPool2D, p.isPlain2x2 { end += 1 }
            }
            stages.append(i..<end)
            i = end
        }
        return stages
    }

    /// What stage `s`'s convolution computes after its product (`.none` for a lone layer).
    func epilogue(_ s: Range<Int>) -> ConvEpilogue {
        guard s.count > 1, let relu = layers[s.lowerBound + 1] as? ClampedReLU else { return .none }
        return ConvEpilogue(cap: relu.cap, pool: s.count == 3)
    }

    /// Stage `s`'s forward pass.
    public func forward(stage s: Range<Int>, _ x: Tensor, training: Bool) -> Tensor {
        guard s.count > 1, let conv = layers[s.lowerBound] as? Conv2D else {
            return layers[s.lowerBound].forward(x, training: training)
        }
        return conv.forward(x, epilogue: epilogue(s))
    }

    /// Weights and biases a layer adds for an input shape (nil when the count overflows).
    static func parameterCount(_ spec: LayerSpec, input: [Int]) -> Int? {
        func product(_ xs: [Int]) -> Int? {
            var p = 1
            for x in xs {
                let (r, o) = p.multipliedReportingOverflow(by: max(0, x))
                if o { return nil }
                p = r
            }
            return p
        }
        switch spec {
        case let .dense(inF, outF, _):
            guard let i = inF ?? product(input), let w = product([i, outF]) else { return nil }
            return w.addingReportingOverflow(outF).overflow ? nil : w + outF
        case let .conv2d(inC, outC, k, _, _, _):
            guard let w = product([inC ?? input.first ?? 1, outC, k, k]) else { return nil }
            return w.addingReportingOverflow(outC).overflow ? nil : w + outC
        case .batchnorm1d, .batchnorm2d:
            return 4 * (input.first ?? 0)
        default:
            return 0
        }
    }

    private static func make(
        _ spec: LayerSpec, input: [Int], index: Int, seed: UInt64,
        rng: inout SeededRandom
    ) -> Layer {
        switch spec {
        case let .dense(inF, outF, bias):
            return Dense(inFeatures: inF ?? input.reduce(1, *), outFeatures: outF, bias: bias, rng: &rng)
        case let .conv2d(inC, outC, k, s, p, bias):
            return Conv2D(
                inChannels: inC ?? (input.first ?? 0), outChannels: outC, kernel: k, stride: s,
                padding: p, bias: bias, rng: &rng)
        case let .maxpool2d(k, s, p): return MaxPool2D(kernel: k, stride: s, padding: p)
        case let .avgpool2d(k, s): return AvgPool2D(kernel: k, stride: s)
        case .globalavgpool2d: return GlobalAvgPool2D()
        case .relu: return ClampedReLU.relu()
        case .relu6: return ClampedReLU.relu6()
        case .flatten: return Flatten()
        case let .batchnorm1d(eps, m):
            return BatchNorm(channels: input.first ?? 0, spatial: false, eps: eps, momentum: m)
        case let .batchnorm2d(eps, m):
            return BatchNorm(channels: input.first ?? 0, spatial: true, eps: eps, momentum: m)
        case let .dropout(p): return Dropout(p: p, seed: seed &+ 0x5EED &+ UInt64(index))
        }
    }

    public var outputShape: [Int] { shapes.last ?? inputShape }

    /// Every state tensor with its PyTorch name, in state-dict order.
    public var namedState: [(name: String, parameter: Parameter)] {
        layers.enumerated().flatMap { i, layer in layer.state.map { ("\(i).\($0.name)", $0) } }
    }

    public var trainableParameters: [Parameter] { namedState.map(\.parameter).filter(\.isTrainable) }

    /// x (N, inputShape…) → logits (N, outputShape…)
    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        var h = x
        for s in stages { h = forward(stage: s, h, training: training) }
        byStages = true
        return h
    }

    /// Forward pass with a hook after every layer that sees (and may change) its output:
    /// used to capture activations and to fake-quantise them. With `from: k`, `x` is the input of
    /// layer k (the output of layer k − 1) and layers 0..<k are skipped.
    public func forward(
        _ x: Tensor, from start: Int = 0, training: Bool, after: (Int, inout Tensor) -> Void
    ) -> Tensor {
        var h = x
        for i in start..<layers.count {
            h = layers[i].forward(h, training: training)
            after(i, &h)
        }
        byStages = false
        return h
    }

    /// Back-propagates ∂L/∂logits through every layer, accumulating parameter gradients. It stops
    /// at the first layer with trainable parameters: no input gradient below it is computed.
    public func backward(_ dLogits: Tensor) {
        var d = dLogits
        for s in (byStages ? stages : layers.indices.map { $0..<$0 + 1 }).reversed() {
            guard let next = backward(stage: s, d) else { return }
            d = next
        }
    }

    /// Stage `s`'s backward pass after a forward pass by stages (a lone layer's either way); nil
    /// from the first layer with trainable parameters down, whose input gradients no parameter needs.
    public func backward(stage s: Range<Int>, _ d: Tensor) -> Tensor? {
        guard s.lowerBound >= firstTrainableLayer else { return nil }
        return layers[s.lowerBound].backward(d, needInputGradient: needsInputGradient(layer: s.lowerBound))
    }

    /// Whether layer `i`'s backward pass computes its input gradient: some layer below it has
    /// trainable parameters.
    public func needsInputGradient(layer i: Int) -> Bool { i > firstTrainableLayer }

    public func zeroGradients() {
        for p in trainableParameters { p.zeroGradient() }
    }

    /// Multiply–accumulates of one sample's forward pass.
    public var forwardMACs: Int {
        var shape = inputShape, total = 0
        for (layer, out) in zip(layers, shapes) { total += layer.forwardMACs(input: shape); shape = out }
        return total
    }

    /// Multiply–accumulates of one sample's training step: the forward pass, the weight-gradient
    /// GEMMs (one per forward GEMM) and the input-gradient GEMMs above the first trainable layer.
    public var trainingMACs: Int {
        var shape = inputShape, total = 0
        for (i, (layer, out)) in zip(layers, shapes).enumerated() {
            let f = layer.forwardMACs(input: shape)
            total += f * (needsInputGradient(layer: i) ? 3 : 2)
            shape = out
        }
        return total
    }
}
