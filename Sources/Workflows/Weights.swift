// Model weights as safetensors, named as PyTorch's nn.Sequential state dict (QShape's or PyTorch's).
import Config
import Foundation
import Tensors
import NeuralNet
import DataIO

/// Model weights as safetensors, named and laid out exactly as PyTorch's `nn.Sequential` state dict.
public enum Weights {
    /// Saves every state tensor (F32; BatchNorm's counter as I64) atomically.
    public static func save(_ model: Sequential, to path: String, metadata: [String: String] = [:]) throws {
        try SafeTensors.write(
            SafeTensors.File(
                entries: entries(model), metadata: metadata.merging(["format": "pt"]) { a, _ in a }), to: path
        )
    }

    /// The model's state dict as safetensors entries.
    public static func entries(_ model: Sequential) -> [SafeTensors.Entry] {
        model.namedState.map { name, p -> SafeTensors.Entry in
            p.role == .counter
                ? SafeTensors.Entry(name: name, int64: p.value.data.map { Int64($0) }, shape: [])
                : SafeTensors.Entry(name: name, floats: p.value.data, shape: p.value.shape)
        }
    }

    /// Loads a state dict into `model`. Missing, unexpected and mis-shaped tensors are all listed
    /// in one error, and nothing is changed unless every tensor fits.
    public static func load(_ path: String, into model: Sequential) throws {
        let file = try SafeTensors.read(path)
        try load(file, path: path, into: model)
    }

    public static func load(_ file: SafeTensors.File, path: String, into model: Sequential) throws {
        let expected = model.namedState
        let names = Set(expected.map(\.name))
        var problems: [String] = []
        let missing = expected.filter { file[$0.name] == nil }.map(\.name)
        if !missing.isEmpty { problems.append("missing \(missing.joined(separator: ", "))") }
        let extra = file.entries.map(\.name).filter { !names.contains($0) }
        if !extra.isEmpty { problems.append("unexpected \(extra.joined(separator: ", "))") }
        for (name, p) in expected {
            guard let e = file[name] else { continue }
            let want = p.role == .counter ? [] : p.value.shape
            if e.shape != want && !(p.role == .counter && e.count == 1) {
                problems.append("\(name) has shape \(e.shape), the model needs \(want)")
            }
        }
        guard problems.isEmpty else {
            throw DataError("\(path) does not fit the model: \(problems.joined(separator: "; "))")
        }
        let values = expected.map { name, _ in file[name]!.floats }
        for ((name, _), v) in zip(expected, values) {
            try checkFinite(v, tensor: name, path: path)
        }
        for ((_, p), v) in zip(expected, values) { p.value = Tensor(shape: p.value.shape, data: v) }
    }

    /// Refuses NaN and infinite values (and magnitudes no quantiser can scale), naming the tensor.
    public static func checkFinite(_ v: [Float], tensor name: String, path: String) throws {
        if let i = v.firstIndex(where: { !$0.isFinite || abs($0) > 1e30 }) {
            throw DataError(
                "\(path): tensor '\(name)' holds \(v[i]) at index \(i); weights must be finite (|w| ≤ 1e30)")
        }
    }
}
