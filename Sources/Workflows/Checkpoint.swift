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
        let m = file.metadata
        func bad(_ what: String) -> DataError {
            DataError("\(path): not a usable QShape checkpoint (\(what))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = m[key].flatMap({ Int($0) }), v >= 0 else { throw bad("metadata '\(key)'") }
            return v
        }
        guard m["qshape.checkpoint"] == "1", let phase = m["phase"].flatMap(Phase.init) else {
            throw bad("no checkpoint metadata")
        }
        guard let lossSum = m["loss_sum"].flatMap(Double.init), lossSum.isFinite,
            let penalties = try? JSONDecoder().decode(
                [String: Double].self, from: Data((m["penalty_sums"] ?? "").utf8))
        else {
            throw bad("metadata 'loss_sum' or 'penalty_sums'")
        }
        let metrics = try (m["metrics"] ?? "").split(separator: "\n").map { line in
            do { return try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8)) } catch {
                throw bad("metadata 'metrics'")
            }
        }
        func group(_ prefix: String) -> [SafeTensors.Entry] {
            file.entries.filter { $0.name.hasPrefix(prefix) }.map {
                renamed($0, String($0.name.dropFirst(prefix.count)))
            }
        }
        func numbered(_ prefix: String) throws -> [[Float]] {
            let found = group(prefix)
            return try found.indices.map { i in
                guard let e = found.first(where: { $0.name == "\(i)" }), e.dtype == .F32 else {
                    throw bad("tensor \(prefix)\(i)")
                }
                return e.floats
            }
        }
        func randomWords(_ e: SafeTensors.Entry?) throws -> [UInt64] {
            guard let e, e.dtype == .I64, e.shape == [4] else { throw bad("random generator state") }
            return e.integers.map { UInt64(bitPattern: $0) }
        }
        var dropout: [Int: [UInt64]] = [:]
        for e in group("random.dropout.") {
            guard let layer = Int(e.name) else { throw bad("tensor random.dropout.\(e.name)") }
            dropout[layer] = try randomWords(e)
        }
        let terms = try int("loss_terms")
        guard terms <= 64 else { throw bad("metadata 'loss_terms'") }
        let lossTerms = (0..<terms).map { t in
            Dictionary(uniqueKeysWithValues: group("loss.\(t).").map { ($0.name, $0.floats) })
        }
        let optimizer = Optimizer.State(
            step: try int("optimizer.step"), first: try numbered("optimizer.first."),
            second: try numbered("optimizer.second."))
        var sums = EpochSums()
        sums.lossSum = lossSum
        sums.correct = try int("correct")
        sums.seen = try int("seen")
        sums.penaltySums = penalties
        let snapshot = TrainerSnapshot(
            epoch: try int("epoch"), step: try int("step"),
            epochRandom: try randomWords(file["random.epoch"]), sums: sums,
            optimizer: optimizer, dropout: dropout, lossTerms: lossTerms)
        let base = group("qat_base.")
        guard (phase == .qat) == !base.isEmpty else { throw bad("the QAT phase's starting weights") }
        return Contents(
            phase: phase, trainer: snapshot, metrics: metrics,
            model: SafeTensors.File(entries: group("model.")),
            qatBase: base.isEmpty ? nil : SafeTensors.File(entries: base))
    }

    /// "epoch 3, step 20" or "epoch 3 done": for messages about a killed run's checkpoint.
    static func describe(_ folder: String) -> String {
        (try? read("\(folder)/\(fileName)"))?.position ?? "unreadable"
    }

    private static func renamed(_ e: SafeTensors.Entry, _ name: String) -> SafeTensors.Entry {
        SafeTensors.Entry(name: name, dtype: e.dtype, shape: e.shape, bytes: e.bytes)
    }

    private static func words(_ name: String, _ w: [UInt64]) -> SafeTensors.Entry {
        SafeTensors.Entry(name: name, int64: w.map { Int64(bitPattern: $0) }, shape: [w.count])
    }
}
