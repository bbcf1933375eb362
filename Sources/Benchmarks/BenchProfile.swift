// `qshape bench --only profile`: where a training step of each example network spends its time,
// layer by layer, forward and backward, with the GFLOP/s each reaches: the next bottleneck, visible.
import Config
import Workflows
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO

extension BenchWorkflow {
    public struct LayerProfile: Codable, Sendable {
        public var network: String
        /// BLAS threads (and the convolution's, ReLU's and pooling's workers: two when it has two).
        public var threads: Int = 1
        /// "3 conv2d", "0 conv2d+relu+maxpool2d" (a stage run as one), "loss", "optimizer"…
        public var layer: String
        public var forwardMs: Double, backwardMs: Double
        /// Of the layer's multiply–accumulates (none for ReLU, pooling, the loss, the optimiser).
        public var forwardGFLOPS: Double?, backwardGFLOPS: Double?
        enum CodingKeys: String, CodingKey {
            case network, threads, layer
            case forwardMs = "forward_ms", backwardMs = "backward_ms"
            case forwardGFLOPS = "forward_gflops", backwardGFLOPS = "backward_gflops"
        }
    }

    /// Per-step milliseconds, the mean of `steps` training steps (batch 128, the threads set)
    /// after a warm-up: each stage's forward and backward as `Sequential` runs them (a
    /// convolution with the ReLU and pooling it computes itself is one), then the loss and the
    /// optimiser step.
    static func profile(
        network: String, layers specs: [LayerSpec], steps: Int = 30, batch: Int = 128
    ) throws -> [LayerProfile] {
        let model = try Sequential(specs: specs, inputShape: [1, 28, 28], seed: 1)
        let optimizer = Optimizer(OptimizerConfig(), parameters: model.trainableParameters)
        let data = trainingData.data
        let stages = model.stages, n = stages.count
        var forward = [Double](repeating: 0, count: n), backward = forward
        var loss = 0.0, step = 0.0
        let clock = ContinuousClock()
        for s in 0..<(steps + 3) {
            let start = (s * batch) % max(1, data.count - batch)
            let (x, y) = data.batch(start..<(start + batch), normalization: Normalization())
            let timed = s >= 3
            model.zeroGradients()
            var h = x
            for (i, stage) in stages.enumerated() {
                let t = clock.now
                h = model.forward(stage: stage, h, training: true)
                if timed { forward[i] += seconds(clock.now - t) }
            }
            var t = clock.now
            let r = softmaxCrossEntropy(logits: h, labels: y)
            if timed { loss += seconds(clock.now - t) }
            var d = r.dLogits
            for i in stride(from: n - 1, through: 0, by: -1) {
                t = clock.now
                let next = model.backward(stage: stages[i], d)
                if timed { backward[i] += seconds(clock.now - t) }
                guard let next else { break }
                d = next
            }
            t = clock.now
            optimizer.step(learningRate: 1e-3)
            if timed { step += seconds(clock.now - t) }
        }
        var shape = model.inputShape
        var rows: [LayerProfile] = []
        for (i, stage) in stages.enumerated() {
            let macs = Double(model.layers[stage.lowerBound].forwardMACs(input: shape) * batch)
            shape = model.shapes[stage.upperBound - 1]
            let name = "\(stage.lowerBound) " + stage.map { model.specs[$0].typeName }.joined(separator: "+")
            let f = forward[i] / Double(steps), b = backward[i] / Double(steps)
            // Backward: the weight gradient, and the input gradient above the first trainable layer.
            let backwardMACs = macs * (model.needsInputGradient(layer: stage.lowerBound) ? 2 : 1)
            rows.append(
                LayerProfile(
                    network: network, layer: name, forwardMs: f * 1e3, backwardMs: b * 1e3,
                    forwardGFLOPS: macs > 0 ? 2 * macs / f / 1e9 : nil,
                    backwardGFLOPS: macs > 0 ? 2 * backwardMACs / b / 1e9 : nil))
        }
        rows.append(
            LayerProfile(
                network: network, layer: "loss", forwardMs: loss / Double(steps) * 1e3, backwardMs: 0))
        rows.append(
            LayerProfile(
                network: network, layer: "optimizer (adam)", forwardMs: 0,
                backwardMs: step / Double(steps) * 1e3))
        return rows
    }

    static func runProfile(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            for threads in threadCounts {
                BLASThreads.set(threads)
                var rows = try profile(network: name, layers: layers)
                for i in rows.indices { rows[i].threads = threads }
                logProfile(name, rows, threads: threads, log: log)
                r.profile += rows
            }
        }
    }

    static func logProfile(_ name: String, _ rows: [LayerProfile], threads: Int, log: (String) -> Void) {
        let total = rows.reduce(0) { $0 + $1.forwardMs + $1.backwardMs }
        log(
            String(
                format: "profile %@ (batch 128, %d threads): %.2f ms per step", name as NSString, threads,
                total))
        for p in rows {
            let rate = { (g: Double?) in
                g.map { String(format: "%6.1f GFLOP/s", $0) } ?? String(repeating: " ", count: 13)
            }
            let name = p.layer.padding(toLength: max(18, p.layer.count), withPad: " ", startingAt: 0)
            log(
                "  \(name)"
                    + String(
                        format: " forward %7.3f ms %@   backward %7.3f ms %@   %4.1f%%",
                        p.forwardMs, rate(p.forwardGFLOPS), p.backwardMs, rate(p.backwardGFLOPS),
                        100 * (p.forwardMs + p.backwardMs) / max(total, 1e-9)))
        }
    }
}
