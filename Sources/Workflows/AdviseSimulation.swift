// The simulation behind `qshape advise`: any mix of float and quantised layers evaluated on a
// subset of test images, reusing the float activations up to the first quantised layer.
import Foundation
import Tensors
import NeuralNet
import DataIO
import Quantization

/// The folded float model of a conversion with each conv/dense's weight and bias either float or
/// dequantised at some width, and every activation on its integer grid (the grids do not depend
/// on the weight widths: they come from the float model's calibration). Evaluating a mix is then
/// exactly the simulation of converting with those per-layer widths.
struct LayerMixSimulator {
    let folded: Sequential
    let hook: (Int, inout Tensor) -> Void
    let batches: [(x: Tensor, labels: [Int32])]
    /// Folded index of each conv/dense, in layer order.
    let weighted: [Int]
    /// Each conv/dense's weight and (when it has one) bias parameter.
    let parameters: [[Parameter]]
    let float: [[Tensor]]
    /// Width → each conv/dense's dequantised weight and bias at that width.
    let quantized: [Int: [[Tensor]]]

    /// `conversions` are of one model at several widths (the widest supplies the folded model and
    /// the activation grids); `indices` the images of `data` evaluated, `batch` images at a time.
    init(
        conversions: [Int: Conversion], data: Dataset, indices: [Int], normalization: Normalization,
        batch: Int = 500
    ) {
        let base = conversions[conversions.keys.max()!]!
        folded = base.folded
        hook = base.activationFakeQuantizer()
        weighted = base.layers.map { Int($0.name.prefix { $0 != "." })! }
        parameters = weighted.map { [folded] i in
            let state = folded.layers[i].state
            return state.filter { $0.role == .weight } + state.filter { $0.name == "bias" }
        }
        float = parameters.map { $0.map(\.value) }
        var q: [Int: [[Tensor]]] = [:]
        for (bits, c) in conversions {
            q[bits] = zip(weighted, parameters).map { i, ps in
                ps.map { p in c.dequantized["\(i).\(p.role == .weight ? "weight" : "bias")"]! }
            }
        }
        quantized = q
        batches = stride(from: 0, to: indices.count, by: batch).map {
            data.batch(indices[$0..<min(indices.count, $0 + batch)], normalization: normalization)
        }
    }

    var imageCount: Int { batches.reduce(0) { $0 + $1.labels.count } }

    /// Test accuracy (%) of each mix: per conv/dense, a width or nil for float weights.
    func accuracies(_ mixes: [[Int?]]) -> [Double] {
        var correct = [Int](repeating: 0, count: mixes.count)
        for (x, labels) in batches {
            set(Array(repeating: nil, count: weighted.count))
            // The float pass, keeping the input of every conv/dense.
            var inputs: [Int: Tensor] = [0: x]
            let logits = folded.forward(x, training: false) { i, h in
                hook(i, &h)
                inputs[i + 1] = h
            }
            let floatCorrect = matches(logits, labels)
            for (k, mix) in mixes.enumerated() {
                guard let first = mix.firstIndex(where: { $0 != nil }) else {
                    correct[k] += floatCorrect
                    continue
                }
                set(mix)
                let start = weighted[first]
                correct[k] += matches(
                    folded.forward(inputs[start]!, from: start, training: false, after: hook), labels)
            }
        }
        set(Array(repeating: nil, count: weighted.count))
        return correct.map { 100 * Double($0) / Double(max(1, imageCount)) }
    }

    /// Puts each layer's float or dequantised tensors into the model.
    private func set(_ mix: [Int?]) {
        for (l, bits) in mix.enumerated() {
            let values = bits.map { quantized[$0]![l] } ?? float[l]
            for (p, v) in zip(parameters[l], values) { p.value = v }
        }
    }

    private func matches(_ logits: Tensor, _ labels: [Int32]) -> Int {
        zip(argmaxRows(logits), labels).filter { $0 == Int($1) }.count
    }

    /// Each conv/dense output's SQNR (dB) against its activation grid, over the images: how much
    /// the 8-bit (or 16-bit) activations alone cost, with float weights.
    func activationSQNR(outputs: [Int]) -> [Double] {
        var signal = [Int: Double](), noise = [Int: Double]()
        let wanted = Set(outputs)
        for (x, _) in batches {
            _ = folded.forward(x, training: false) { i, h in
                guard wanted.contains(i) else { return hook(i, &h) }
                let before = h.data
                hook(i, &h)
                for (a, b) in zip(before, h.data) {
                    signal[i, default: 0] += Double(a) * Double(a)
                    noise[i, default: 0] += Double(a - b) * Double(a - b)
                }
            }
        }
        return outputs.map { i in
            let n = noise[i, default: 0]
            return n == 0 ? 999 : 10 * log10(signal[i, default: 0] / n)
        }
    }
}
