// The parsers that read untrusted files, as fuzz targets: each takes arbitrary bytes and must end
// in a value or a thrown error — never a trap, a hang or an unbounded allocation. `qshape-fuzz`
// runs them under libFuzzer (`make fuzz`); the test suite replays Fuzz/corpus and
// Fuzz/regressions through them.
import Config
import Foundation
import DataIO
import NeuralNet
import Training

public enum FuzzTarget: String, CaseIterable, Sendable {
    case safetensors, idx, npy, csv, config, checkpoint

    /// One input through the parser. Readers that take a path get the bytes in a file of this
    /// process's own (written in place, not atomically: nothing else reads it; removed after).
    public func run(_ bytes: [UInt8]) {
        switch self {
        case .safetensors:
            _ = try? SafeTensors.decode(bytes, path: "fuzz.safetensors")
        case .idx, .npy, .csv:
            let path = FuzzTarget.scratch
            guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { return }
            defer { unlink(path) }
            switch self {
            case .idx: _ = try? IDX.read(path)
            case .npy: _ = try? NPY.read(path)
            default: _ = try? CSV.dataset(path: path)
            }
        case .config:
            let text = String(decoding: bytes, as: UTF8.self)
            guard let node = try? ConfigNode.parse(yaml: text, file: "fuzz.yaml") else { return }
            _ = try? Config(node: node, file: "fuzz.yaml", defaultName: "fuzz")
        case .checkpoint:
            // Decoded, then restored into a small model with dropout and Adam (`--resume`'s path).
            guard let file = try? SafeTensors.decode(bytes, path: "fuzz.safetensors"),
                let c = try? Checkpoint.decode(file, path: "fuzz.safetensors"),
                let model = try? Sequential(specs: FuzzTarget.checkpointModel, inputShape: [4], seed: 0)
            else { return }
            var options = TrainingOptions()
            options.batchSize = 2
            let trainer = Trainer(model: model, options: options, trainingSetSize: 8)
            _ = try? TrainWorkflow.restore(c, into: trainer, model: model, path: "fuzz.safetensors")
        }
    }

    /// The model the checkpoint target restores into (Fuzz/corpus/checkpoint holds its checkpoints).
    static let checkpointModel: [LayerSpec] = [
        .flatten, .dense(inFeatures: 4, outFeatures: 3, bias: true), .relu,
        .dropout(p: 0.5), .dense(inFeatures: 3, outFeatures: 2, bias: true)
    ]

    static let scratch = NSTemporaryDirectory() + "qshape-fuzz-\(getpid()).bin"

    /// Every file under `path` (or the file itself), in name order.
    public static func files(under path: String) -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return [] }
        guard isDir.boolValue else { return [path] }
        let names = (try? FileManager.default.subpathsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { "\(path)/\($0)" }.filter {
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &d) && !d.boolValue
        }
    }
}
