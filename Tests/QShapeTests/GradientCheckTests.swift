// Tests: every layer's forward and backward against Double references and finite differences.
import XCTest
import Tensors
import NeuralNet

/// Every layer's forward against its Double reference, and its input and parameter gradients
/// against central finite differences of that reference (relative error < 1e-3).
final class GradientCheckTests: XCTestCase {
    /// `ref(x, params)` is the layer's definition in Double; params in `layer.state` order (trainable only).
    func check(
        _ layer: Layer, input: Tensor, training: Bool = true, seed: UInt64 = 9,
        file: StaticString = #filePath, line: UInt = #line,
        ref: @escaping (_ x: [Double], _ params: [[Double]]) -> [Double]
    ) {
        let params = layer.state.filter(\.isTrainable)
        let y = layer.forward(input, training: training)
        let x = input.data.doubles
        let p = params.map { $0.value.data.doubles }
        let yRef = ref(x, p)
        XCTAssertEqual(y.count, yRef.count, "output size", file: file, line: line)
        let scale = max(1e-6, yRef.map(abs).max() ?? 0)
        let fwdErr = zip(y.data, yRef).map { abs(Double($0) - $1) }.max() ?? 0
        XCTAssertLessThan(fwdErr / scale, 1e-5, "forward vs Double reference", file: file, line: line)

        let r = randomTensor(y.shape, seed: seed)
        for q in params { q.grad.zero() }
        guard let dx = layer.backward(r, needInputGradient: true) else {
            return XCTFail("no input gradient", file: file, line: line)
        }
        XCTAssertEqual(dx.shape, input.shape, file: file, line: line)
        let rd = r.data.doubles
        let sample = { (n: Int) -> [Int] in n <= 300 ? Array(0..<n) : (0..<300).map { ($0 * 7919) % n } }
        let nx = numericGradient(x, indices: sample(x.count)) { dot(ref($0, p), rd) }
        XCTAssertLessThan(relativeError(dx.data, nx), 1e-3, "input gradient", file: file, line: line)
        for (j, q) in params.enumerated() {
            let np = numericGradient(p[j], indices: sample(p[j].count)) { v in
                var pp = p; pp[j] = v; return dot(ref(x, pp), rd)
            }
            XCTAssertLessThan(
                relativeError(q.grad.data, np), 1e-3, "gradient of \(q.name)", file: file, line: line)
        }
    }

    func testDense() {
        var rng = SeededRandom(seed: 1)
        for (n, i, o, bias) in [(3, 5, 4, true), (1, 1, 1, true), (7, 13, 3, false)] {
            let layer = Dense(inFeatures: i, outFeatures: o, bias: bias, rng: &rng)
            check(layer, input: randomTensor([n, i], seed: 2)) { x, p in
                Ref.dense(x, n: n, w: p[0], b: bias ? p[1] : nil, inF: i, outF: o)
            }
        }
    }

    func testConvolutionWithStrideAndPadding() {
        var rng = SeededRandom(seed: 3)
        // (batch, channels, height, width, out, kernel, stride, padding)
        let cases = [
            (2, 3, 7, 6, 4, 3, 2, 1), (1, 2, 5, 5, 3, 2, 1, 0), (2, 1, 6, 5, 3, 3, 1, 2),
            (3, 2, 4, 7, 2, 1, 1, 0), (1, 1, 9, 9, 2, 5, 3, 2),
            (2, 2, 5, 4, 9, 3, 1, 1)
        ]  // nine output channels: eight bias sums side by side, one alone
        // The batch in one part and one image at a time (chunkValues 1).
        for (n, c, h, w, o, k, s, p) in cases {
            for chunkValues in [1 << 18, 1] {
                let layer = Conv2D(inChannels: c, outChannels: o, kernel: k, stride: s, padding: p, rng: &rng)
                layer.chunkValues = chunkValues
                check(layer, input: randomTensor([n, c, h, w], seed: 4)) { x, q in
                    Ref.conv(x, n: n, c: c, h: h, wd: w, w: q[0], b: q[1], o: o, k: k, stride: s, pad: p)
                }
            }
        }
        // Rows of eight or more: forward and the weight gradient by the direct loops, against
        // the finite differences and against the SGEMM path.
        for (c, o, k, p) in [(1, 4, 3, 1), (2, 3, 3, 0), (1, 2, 5, 2)] {
            let layer = Conv2D(inChannels: c, outChannels: o, kernel: k, padding: p, rng: &rng)
            let x = randomTensor([3, c, 9, 12], seed: 5)
            check(layer, input: x) { x, q in
                Ref.conv(x, n: 3, c: c, h: 9, wd: 12, w: q[0], b: q[1], o: o, k: k, stride: 1, pad: p)
            }
            func run(direct: Bool) -> [Float] {
                layer.directLoops = direct
                layer.weight.grad.zero()
                let y = layer.forward(x, training: true)
                _ = layer.backward(randomTensor(y.shape, seed: 6), needInputGradient: false)
                return y.data + layer.weight.grad.data
            }
            for (a, b) in zip(run(direct: true), run(direct: false)) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        }
        let noBias = Conv2D(inChannels: 2, outChannels: 2, kernel: 3, padding: 1, bias: false, rng: &rng)
        check(noBias, input: randomTensor([2, 2, 4, 4], seed: 5)) { x, q in
            Ref.conv(x, n: 2, c: 2, h: 4, wd: 4, w: q[0], b: nil, o: 2, k: 3, stride: 1, pad: 1)
        }
    }

    /// The convolution's parts run on two workers when BLAS has two threads and in turn when it
    /// has one, and ReLU and pooling split large tensors: outputs and gradients must be the same
    /// bits either way (the convolution over two steps, so the workers' gradient sums are
    /// cleared between them).
    func testConvolutionIsTheSameOnOneThreadOrTwo() {
        let before = BLASThreads.current
        defer { BLASThreads.set(before) }
        func run(threads: Int) -> [[Float]] {
            BLASThreads.set(threads)
            var rng = SeededRandom(seed: 21)
            let layer = Conv2D(inChannels: 3, outChannels: 5, kernel: 3, padding: 1, rng: &rng)
            layer.chunkValues = 200  // many parts
            var out: [[Float]] = []
            for step in 0..<2 {
                let y = layer.forward(randomTensor([7, 3, 6, 5], seed: 22 + UInt64(step)), training: true)
                let dx = layer.backward(randomTensor(y.shape, seed: 30), needInputGradient: true)!
                out += [y.data, dx.data, layer.weight.grad.data, layer.bias!.grad.data]
            }
            return out
        }
        XCTAssertEqual(run(threads: 1), run(threads: 2))
        // ReLU and 2×2 max pooling split large tensors between the workers.
        func elementwise(threads: Int) -> [[Float]] {
            BLASThreads.set(threads)
            let x = randomTensor([4, 16, 64, 64], seed: 23)  // 262,144 values: above the split's minimum
            let relu = ClampedReLU.relu(), pool = MaxPool2D(kernel: 2)
            let y = pool.forward(relu.forward(x, training: true), training: true)
            let dx = relu.backward(
                pool.backward(randomTensor(y.shape, seed: 24), needInputGradient: true)!,
                needInputGradient: true)!
            return [y.data, dx.data]
        }
        XCTAssertEqual(elementwise(threads: 1), elementwise(threads: 2))
    }

    func testPooling() {
        for (h, w, k, s, p) in [(5, 7, 2, 2, 0), (6, 6, 3, 2, 1), (4, 5, 2, 1, 0), (7, 7, 3, 3, 0)] {
            check(MaxPool2D(kernel: k, stride: s, padding: p), input: randomTensor([2, 3, h, w], seed: 6)) {
                x, _ in
                Ref.pool(x, planes: 6, h: h, w: w, k: k, stride: s, pad: p, max: true)
            }
        }
        for (h, w, k, s) in [(5, 7, 2, 2), (4, 5, 2, 1), (6, 6, 3, 3)] {
            check(AvgPool2D(kernel: k, stride: s), input: randomTensor([2, 3, h, w], seed: 7)) { x, _ in
                Ref.pool(x, planes: 6, h: h, w: w, k: k, stride: s, pad: 0, max: false)
            }
        }
    }

    func testGlobalAveragePool() {
        check(GlobalAvgPool2D(), input: randomTensor([2, 3, 5, 4], seed: 8)) { x, _ in
            (0..<6).map { p in x[(p * 20)..<((p + 1) * 20)].reduce(0, +) / 20 }
        }
    }

    func testActivationsAndFlatten() {
        let x = randomTensor([4, 3, 5], seed: 10, scale: 8)
        check(ClampedReLU.relu(), input: x) { x, _ in Ref.clamp(x, cap: .infinity) }
        check(ClampedReLU.relu6(), input: x) { x, _ in Ref.clamp(x, cap: 6) }
        check(Flatten(), input: randomTensor([2, 3, 2, 2], seed: 11)) { x, _ in x }
    }

    func testBatchNormTrainingAndEvaluation() {
        let bn1 = BatchNorm(channels: 3, spatial: false)
        bn1.gamma.value = randomTensor([3], seed: 12)
        bn1.beta.value = randomTensor([3], seed: 13)
        check(bn1, input: randomTensor([5, 3], seed: 14)) { x, p in
            Ref.batchNorm(x, n: 5, c: 3, s: 1, gamma: p[0], beta: p[1], eps: 1e-5)
        }
        let bn2 = BatchNorm(channels: 3, spatial: true)
        bn2.gamma.value = randomTensor([3], seed: 15)
        check(bn2, input: randomTensor([2, 3, 3, 2], seed: 16)) { x, p in
            Ref.batchNorm(x, n: 2, c: 3, s: 6, gamma: p[0], beta: p[1], eps: 1e-5)
        }
        // Evaluation mode: the running statistics, an affine map per channel.
        let mean = bn2.runningMean.value.data.doubles, variance = bn2.runningVar.value.data.doubles
        check(bn2, input: randomTensor([2, 3, 3, 2], seed: 17), training: false) { x, p in
            x.enumerated().map { i, v in
                let c = (i / 6) % 3
                return p[0][c] * (v - mean[c]) / (variance[c] + 1e-5).squareRoot() + p[1][c]
            }
        }
    }

    func testBatchNormRunningStatisticsFollowPyTorch() {
        let bn = BatchNorm(channels: 1, spatial: false, momentum: 0.1)
        let x = Tensor(shape: [4, 1], data: [1, 2, 3, 6])  // mean 3, unbiased variance 14/3
        _ = bn.forward(x, training: true)
        XCTAssertEqual(bn.runningMean.value.data[0], 0.3, accuracy: 1e-6)
        XCTAssertEqual(bn.runningVar.value.data[0], 0.9 + 0.1 * 14 / 3, accuracy: 1e-6)
        XCTAssertEqual(bn.batchesTracked.value.data[0], 1)
    }

    func testDropoutIsLinearInItsMaskAndIdentityInEvaluation() {
        let d = Dropout(p: 0.3, seed: 1)
        let x = randomTensor([50, 40], seed: 18)
        let y = d.forward(x, training: true)
        let mask = zip(y.data, x.data).map { Double($0 / $1) }
        let zeros = mask.filter { $0 == 0 }.count
        XCTAssertEqual(Double(zeros) / Double(mask.count), 0.3, accuracy: 0.03)
        for m in mask where m != 0 { XCTAssertEqual(m, 1 / 0.7, accuracy: 1e-5) }
        let r = randomTensor(y.shape, seed: 19)
        let dx = d.backward(r, needInputGradient: true)!
        for i in 0..<dx.count {
            XCTAssertEqual(Double(dx.data[i]), Double(r.data[i]) * mask[i], accuracy: 1e-5)
        }
        XCTAssertEqual(d.forward(x, training: false), x)
    }

    func testSoftmaxCrossEntropyGradientAndStability() {
        let z = randomTensor([4, 5], seed: 20, scale: 3)
        let labels: [Int32] = [0, 4, 2, 2]
        let r = softmaxCrossEntropy(logits: z, labels: labels)
        XCTAssertEqual(r.loss, Ref.crossEntropy(z.data.doubles, labels: labels, k: 5), accuracy: 1e-6)
        let n = numericGradient(z.data.doubles) { Ref.crossEntropy($0, labels: labels, k: 5) }
        XCTAssertLessThan(relativeError(r.dLogits.data, n), 1e-3)
        // Huge logits neither overflow nor lose the answer.
        let big = softmaxCrossEntropy(logits: Tensor(shape: [1, 3], data: [1000, -1000, 999]), labels: [2])
        XCTAssertEqual(big.loss, 1 + _log(1 + _exp(-1)), accuracy: 1e-4)
        XCTAssertFalse(big.dLogits.data.contains { !$0.isFinite })
    }

    /// The whole network, loss included: Sequential wiring, state order and every parameter.
    func testSequentialNetworkGradients() throws {
        let specs: [LayerSpec] = [
            .conv2d(inChannels: 1, outChannels: 2, kernel: 3, stride: 1, padding: 1, bias: true), .relu,
            .maxpool2d(kernel: 2, stride: nil, padding: 0), .flatten,
            .dense(inFeatures: nil, outFeatures: 3, bias: true)
        ]
        let model = try Sequential(specs: specs, inputShape: [1, 5, 5], seed: 3)
        XCTAssertEqual(model.namedState.map(\.name), ["0.weight", "0.bias", "4.weight", "4.bias"])
        let x = randomTensor([2, 1, 5, 5], seed: 21)
        let labels: [Int32] = [1, 2]
        model.zeroGradients()
        let r = softmaxCrossEntropy(logits: model.forward(x, training: true), labels: labels)
        model.backward(r.dLogits)
        let params = model.trainableParameters
        let values = params.map { $0.value.data.doubles }
        func loss(_ p: [[Double]]) -> Double {
            var h = Ref.conv(
                x.data.doubles, n: 2, c: 1, h: 5, wd: 5, w: p[0], b: p[1], o: 2, k: 3, stride: 1, pad: 1)
            h = Ref.clamp(h, cap: .infinity)
            h = Ref.pool(h, planes: 4, h: 5, w: 5, k: 2, stride: 2, pad: 0, max: true)
            h = Ref.dense(h, n: 2, w: p[2], b: p[3], inF: 8, outF: 3)
            return Ref.crossEntropy(h, labels: labels, k: 3)
        }
        XCTAssertEqual(r.loss, loss(values), accuracy: 1e-5)
        for (j, p) in params.enumerated() {
            let n = numericGradient(values[j]) { v in
                var q = values; q[j] = v; return loss(q)
            }
            XCTAssertLessThan(relativeError(p.grad.data, n), 1e-3, "parameter \(j)")
        }
    }

    /// Backward stops at the first layer with parameters: a Flatten below the first dense layer
    /// asks it for no input gradient (a third of that layer's work), a layer above one does.
    func testBackwardComputesNoInputGradientBelowTheFirstTrainableLayer() throws {
        let specs: [LayerSpec] = [
            .flatten, .relu, .dense(inFeatures: nil, outFeatures: 4, bias: true), .relu,
            .dense(inFeatures: nil, outFeatures: 3, bias: false)
        ]
        let model = try Sequential(specs: specs, inputShape: [1, 3, 3], seed: 5)
        XCTAssertEqual((0..<5).map { model.needsInputGradient(layer: $0) }, [false, false, false, true, true])
        let x = randomTensor([2, 1, 3, 3], seed: 40)
        let r = softmaxCrossEntropy(logits: model.forward(x, training: true), labels: [0, 2])
        var d: Tensor? = r.dLogits
        for s in model.stages.reversed() { d = d.flatMap { model.backward(stage: s, $0) } }
        XCTAssertNil(d)
        XCTAssertNotNil(model.backward(stage: 4..<5, r.dLogits))
        let dFirst = randomTensor([2, 4], seed: 41)
        XCTAssertNil(model.backward(stage: 2..<3, dFirst), "the first dense layer's input gradient")
        XCTAssertNil(model.backward(stage: 0..<1, randomTensor([2, 9], seed: 42)))
        // A network whose first layer has parameters: its own input gradient only is skipped.
        let cnn = try Sequential(
            specs: [
                .conv2d(inChannels: 1, outChannels: 2, kernel: 3, stride: 1, padding: 1, bias: true), .flatten
            ],
            inputShape: [1, 4, 4], seed: 6)
        XCTAssertEqual((0..<2).map { cnn.needsInputGradient(layer: $0) }, [false, true])
    }

    /// A convolution computing the ReLU (or ReLU6) and 2×2 pooling after it (`ConvEpilogue`) gives
    /// the separate layers' outputs and gradients to the bit: odd sizes, ties (integer inputs and
    /// weights), values past ReLU6's cap, rows of windows shorter and longer than a vector of
    /// eight, one part or many, one thread or two.
    func testFusedStagesMatchTheLayersToTheBit() throws {
        let before = BLASThreads.current
        defer { BLASThreads.set(before) }
        let cases: [(relu: LayerSpec, pool: LayerSpec?, h: Int, w: Int, integers: Bool)] = [
            (.relu, .maxpool2d(kernel: 2, stride: nil, padding: 0), 6, 8, false),
            (.relu6, .maxpool2d(kernel: 2, stride: nil, padding: 0), 7, 5, true),
            (.relu, .maxpool2d(kernel: 2, stride: nil, padding: 0), 5, 5, true),
            (.relu6, nil, 5, 6, false), (.relu, .maxpool2d(kernel: 3, stride: 2, padding: 1), 6, 6, true),
            (.relu6, .maxpool2d(kernel: 2, stride: nil, padding: 0), 4, 29, true)  // 8 windows, then a tail
        ]
        for (index, c) in cases.enumerated() {
            var specs: [LayerSpec] = [
                .conv2d(inChannels: 2, outChannels: 3, kernel: 3, stride: 1, padding: 1, bias: true), c.relu
            ]
            specs +=
                (c.pool.map { [$0] } ?? []) + [.flatten, .dense(inFeatures: nil, outFeatures: 4, bias: true)]
            var x = randomTensor([5, 2, c.h, c.w], seed: 40 + UInt64(index), scale: 4)
            if c.integers { x = Tensor(shape: x.shape, data: x.data.map { $0.rounded() }) }
            func run(byStages: Bool, threads: Int, chunkValues: Int) throws -> [[Float]] {
                BLASThreads.set(threads)
                let model = try Sequential(specs: specs, inputShape: [2, c.h, c.w], seed: 7)
                (model.layers[0] as! Conv2D).chunkValues = chunkValues
                if c.integers {
                    for p in model.trainableParameters {
                        p.value.data = p.value.data.map { ($0 * 8).rounded() }
                    }
                }
                model.zeroGradients()
                let y =
                    byStages ? model.forward(x, training: true) : model.forward(x, training: true) { _, _ in }
                model.backward(randomTensor(y.shape, seed: 50))
                return [y.data] + model.trainableParameters.map(\.grad.data)
            }
            // Parts change the order of the weight gradient's sums: the same parts either way.
            for (threads, chunk) in [(1, 1 << 18), (2, 1), (1, 1)] {
                XCTAssertEqual(
                    try run(byStages: true, threads: threads, chunkValues: chunk),
                    try run(byStages: false, threads: 1, chunkValues: chunk), "case \(index)")
            }
        }
        let model = try Sequential(
            specs: [
                .conv2d(inChannels: 1, outChannels: 2, kernel: 3, stride: 1, padding: 1, bias: true), .relu,
                .maxpool2d(kernel: 2, stride: nil, padding: 0),
                .conv2d(
                    inChannels: 2, outChannels: 2, kernel: 3, stride: 1, padding: 1, bias: true), .relu6,
                .maxpool2d(kernel: 3, stride: nil, padding: 0), .flatten
            ], inputShape: [1, 8, 8], seed: 1)
        XCTAssertEqual(model.stages, [0..<3, 3..<5, 5..<6, 6..<7])
        // Dense products go to the workers in a network with convolutions, to OpenBLAS otherwise.
        let dense: [LayerSpec] = [.flatten, .dense(inFeatures: nil, outFeatures: 3, bias: true)]
        let cnn = try Sequential(specs: model.specs + dense.dropFirst(), inputShape: [1, 8, 8], seed: 1)
        let mlp = try Sequential(specs: dense, inputShape: [1, 8, 8], seed: 1)
        XCTAssertEqual((cnn.layers.last as? Dense)?.productsOnWorkers, true)
        XCTAssertEqual((mlp.layers.last as? Dense)?.productsOnWorkers, false)
    }

    func testSameSeedGivesBitIdenticalWeights() throws {
        let specs: [LayerSpec] = [.flatten, .dense(inFeatures: nil, outFeatures: 7, bias: true)]
        let a = try Sequential(specs: specs, inputShape: [1, 4, 4], seed: 42)
        let b = try Sequential(specs: specs, inputShape: [1, 4, 4], seed: 42)
        let c = try Sequential(specs: specs, inputShape: [1, 4, 4], seed: 43)
        XCTAssertEqual(a.namedState.map(\.parameter.value), b.namedState.map(\.parameter.value))
        XCTAssertNotEqual(a.namedState.map(\.parameter.value), c.namedState.map(\.parameter.value))
        // PyTorch's default bound: U(±1/√fan_in).
        let w = a.namedState[0].parameter.value.data
        XCTAssertLessThanOrEqual(w.map(abs).max()!, 0.25)
        XCTAssertGreaterThan(w.map(abs).max()!, 0.2)
    }
}
