// Data-free cross-layer equalisation (Nagel et al. 2019) before quantising.
import Tensors
import NeuralNet

/// Data-free cross-layer equalisation (Nagel et al. 2019). For two weight layers joined by a ReLU
/// (with only pooling or flatten between), scaling output channel i of the first by 1/sᵢ and the
/// matching inputs of the second by sᵢ leaves the network's function unchanged
/// (ReLU(x/s) = ReLU(x)/s for s > 0). Choosing sᵢ = √(r1ᵢ/r2ᵢ), with r1ᵢ the range of row i of W1
/// and r2ᵢ the range of the matching columns of W2, makes both ranges √(r1ᵢ·r2ᵢ): per-tensor
/// quantisers then waste less of their grid on a few wide channels. Iterated until it settles.
public enum Equalization {
    /// Equalises every eligible pair of `model` (a folded model: no BatchNorm) in place;
    /// returns the number of pairs.
    @discardableResult
    public static func apply(_ model: Sequential, iterations: Int = 20) -> Int {
        let pairs = eligiblePairs(model)
        for _ in 0..<iterations {
            var change: Float = 0
            for (a, b) in pairs { change = max(change, equalize(model, a, b)) }
            if change < 1e-4 { break }
        }
        return pairs.count
    }

    /// (first, second) weight-layer indices with a ReLU right after the first and only pooling or
    /// flatten between the ReLU and the second.
    static func eligiblePairs(_ model: Sequential) -> [(Int, Int)] {
        var pairs: [(Int, Int)] = []
        let specs = model.specs
        for i in specs.indices where isWeighted(specs[i]) {
            guard i + 1 < specs.count, specs[i + 1] == .relu else { continue }
            var j = i + 2
            while j < specs.count {
                switch specs[j] {
                case .maxpool2d, .avgpool2d, .flatten: j += 1; continue
                default: break
                }
                break
            }
            if j < specs.count, isWeighted(specs[j]) { pairs.append((i, j)) }
        }
        return pairs
    }

    static func isWeighted(_ s: LayerSpec) -> Bool {
        switch s {
        case .dense, .conv2d: true;
        default: false
        }
    }

    /// One equalisation step for a pair; returns the largest relative change of a scale.
    static func equalize(_ model: Sequential, _ a: Int, _ b: Int) -> Float {
        guard let w1 = model.layers[a].state.first(where: { $0.role == .weight }),
            let w2 = model.layers[b].state.first(where: { $0.role == .weight })
        else { return 0 }
        let bias1 = model.layers[a].state.first { $0.name == "bias" }
        let channels = w1.value.shape[0], rowSize = w1.value.count / channels
        let outs = w2.value.shape[0], inSize = w2.value.count / outs
        guard inSize % channels == 0 else { return 0 }
        // Column block of W2 fed by channel i: inputs [i·per, (i+1)·per) of each row (flatten is C, H, W
        // ordered; a conv's input channel i is the block of its kernel taps).
        let per = inSize / channels
        var change: Float = 0
        for i in 0..<channels {
            var r1: Float = 0, r2: Float = 0
            for j in 0..<rowSize { r1 = max(r1, abs(w1.value.data[i * rowSize + j])) }
            for o in 0..<outs {
                for j in 0..<per { r2 = max(r2, abs(w2.value.data[o * inSize + i * per + j])) }
            }
            guard r1 > 0, r2 > 0 else { continue }
            let s = (r1 / r2).squareRoot()
            change = max(change, abs(s - 1))
            for j in 0..<rowSize { w1.value.data[i * rowSize + j] /= s }
            if let bias1 { bias1.value.data[i] /= s }
            for o in 0..<outs { for j in 0..<per { w2.value.data[o * inSize + i * per + j] *= s } }
        }
        return change
    }
}
