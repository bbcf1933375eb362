// The checkpoint `qshape train` keeps in its staging folder: written atomically after every epoch
// (and every `training.checkpoint_steps` steps), it holds everything the run carries from step to
// step, so `--resume` continues a killed run to the very same weights.
import Config
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO

enum Checkpoint {
    static let fileName = "checkpoint.safetensors"

    /// Which loop the checkpoint is in: the training epochs, or quantisation-aware fine-tuning.
    enum Phase: String { case train, qat }

    struct Contents {
        var phase: Phase
        var trainer: TrainerSnapshot
        /// The completed epochs' metrics (both phases).
        var metrics: [EpochMetrics]
        /// The model's state dict, and in the QAT phase the float model QAT started from.
        var model: SafeTensors.File
        var qatBase: SafeTensors.File?

        /// "3 epochs done" or "epoch 4, step 20", for messages.
        var position: String {
            let qat = phase == .qat ? " of quantisation-aware fine-tuning" : ""
            return trainer.step == 0
                ? "\(trainer.epoch) epochs\(qat) done"
                : "epoch \(trainer.epoch + 1)\(qat), step \(trainer.step)"
        }
    }

    /// Writes `dir/checkpoint.safetensors` atomically.
    static func write(
        to dir: String, model: Sequential, phase: Phase, trainer s: TrainerSnapshot,
        metrics: [EpochMetrics], qatBase: SafeTensors.File?
    ) throws {
        var entries = Weights.entries(model).map { renamed($0, "model.\($0.name)") }
        entries += (qatBase?.entries ?? []).map { renamed($0, "qat_base.\($0.name)") }
        for (i, m) in s.optimizer.first.enumerated() {
            entries.append(.init(name: "optimizer.first.\(i)", floats: m, shape: [m.count]))
        }
        for (i, v) in s.optimizer.second.enumerated() {
            entries.append(.init(name: "optimizer.second.\(i)", floats: v, shape: [v.count]))
        }
        entries.append(words("random.epoch", s.epochRandom))
        for (layer, w) in s.dropout.sorted(by: { $0.key < $1.key }) {
            entries.append(words("random.dropout.\(layer)", w))
        }
        for (t, state) in s.lossTerms.enumerated() {
            for (key, v) in state.sorted(by: { $0.key < $1.key }) {
                entries.append(.init(name: "loss.\(t).\(key)", floats: v, shape: [v.count]))
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let lines = try metrics.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        let penalties = String(decoding: try encoder.encode(s.sums.penaltySums), as: UTF8.self)
        let metadata = [
            "qshape.checkpoint": "1", "phase": phase.rawValue, "epoch": "\(s.epoch)", "step": "\(s.step)",
            "optimizer.step": "\(s.optimizer.step)", "loss_sum": "\(s.sums.lossSum)",
            "correct": "\(s.sums.correct)", "seen": "\(s.sums.seen)", "penalty_sums": penalties,
            "loss_terms": "\(s.lossTerms.count)", "metrics": lines.joined(separator: "\n")
        ]
        try SafeTensors.write(
            SafeTensors.File(entries: entries, metadata: metadata), to: "\(dir)/\(fileName)")
    }

    /// Reads a checkpoint; anything missing or malformed is a one-line `DataError`.
    static func read(_ path: String) throws -> Contents {
        try decode(try SafeTensors.read(path), path: path)
    }

    static func decode(_ file: SafeTensors.File, path: String) throws -> Contents {
        let r = CheckpointReader(file: file, path: path), m = file.metadata
        guard m["qshape.checkpoint"] == "1", let phase = m["phase"].flatMap(Phase.init) else {
            throw r.bad("no checkpoint metadata")
        }
        guard let lossSum = m["loss_sum"].flatMap(Double.init), lossSum.isFinite,
            let penalties = try? JSONDecoder().decode(
                [String: Double].self, from: Data((m["penalty_sums"] ?? "").utf8))
        else {
            throw r.bad("metadata 'loss_sum' or 'penalty_sums'")
        }
        let metrics = try (m["metrics"] ?? "").split(separator: "\n").map { line in
            do { return try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8)) } catch {
                throw r.bad("metadata 'metrics'")
            }
        }
        var dropout: [Int: [UInt64]] = [:]
        for e in r.group("random.dropout.") {
            guard let layer = Int(e.name) else { throw r.bad("tensor random.dropout.\(e.name)") }
            dropout[layer] = try r.randomWords(e)
        }
        let terms = try r.int("loss_terms")
        guard terms <= 64 else { throw r.bad("metadata 'loss_terms'") }
        let lossTerms = (0..<terms).map { t in
            Dictionary(uniqueKeysWithValues: r.group("loss.\(t).").map { ($0.name, $0.floats) })
        }
        let optimizer = Optimizer.State(
            step: try r.int("optimizer.step"), first: try r.numbered("optimizer.first."),
            second: try r.numbered("optimizer.second."))
        var sums = EpochSums()
        sums.lossSum = lossSum
        sums.correct = try r.int("correct")
        sums.seen = try r.int("seen")
        sums.penaltySums = penalties
        let snapshot = TrainerSnapshot(
            epoch: try r.int("epoch"), step: try r.int("step"),
            epochRandom: try r.randomWords(file["random.epoch"]), sums: sums,
            optimizer: optimizer, dropout: dropout, lossTerms: lossTerms)
        let base = r.group("qat_base.")
        guard (phase == .qat) == !base.isEmpty else { throw r.bad("the QAT phase's starting weights") }
        return Contents(
            phase: phase, trainer: snapshot, metrics: metrics,
            model: SafeTensors.File(entries: r.group("model.")),
            qatBase: base.isEmpty ? nil : SafeTensors.File(entries: base))
    }

    /// "epoch 3, step 20" or "epoch 3 done": for messages about a killed run's checkpoint.
    static func describe(_ folder: String) -> String {
        (try? read("\(folder)/\(fileName)"))?.position ?? "unreadable"
    }

    static func renamed(_ e: SafeTensors.Entry, _ name: String) -> SafeTensors.Entry {
        SafeTensors.Entry(name: name, dtype: e.dtype, shape: e.shape, bytes: e.bytes)
    }

    private static func words(_ name: String, _ w: [UInt64]) -> SafeTensors.Entry {
        SafeTensors.Entry(name: name, int64: w.map { Int64(bitPattern: $0) }, shape: [w.count])
    }
}

/// Typed reads of a checkpoint file's metadata and tensor groups; every failure names the file.
private struct CheckpointReader {
    let file: SafeTensors.File
    let path: String

    func bad(_ what: String) -> DataError {
        DataError("\(path): not a usable QShape checkpoint (\(what))")
    }

    /// A whole number ≥ 0 from the metadata.
    func int(_ key: String) throws -> Int {
        guard let v = file.metadata[key].flatMap({ Int($0) }), v >= 0 else { throw bad("metadata '\(key)'") }
        return v
    }

    /// The tensors named `prefix…`, renamed without the prefix.
    func group(_ prefix: String) -> [SafeTensors.Entry] {
        file.entries.filter { $0.name.hasPrefix(prefix) }.map {
            Checkpoint.renamed($0, String($0.name.dropFirst(prefix.count)))
        }
    }

    /// `prefix0`, `prefix1`, …: Float tensors numbered without gaps.
    func numbered(_ prefix: String) throws -> [[Float]] {
        let found = group(prefix)
        return try found.indices.map { i in
            guard let e = found.first(where: { $0.name == "\(i)" }), e.dtype == .F32 else {
                throw bad("tensor \(prefix)\(i)")
            }
            return e.floats
        }
    }

    /// A random generator's four words.
    func randomWords(_ e: SafeTensors.Entry?) throws -> [UInt64] {
        guard let e, e.dtype == .I64, e.shape == [4] else { throw bad("random generator state") }
        return e.integers.map { UInt64(bitPattern: $0) }
    }
}
