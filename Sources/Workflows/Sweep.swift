// `qshape sweep`: every combination of a grid of config values trained, then compared.
import Config
import Foundation
import Reports
import DataIO

/// `qshape sweep`: trains every combination of a grid of config values, each into its own run
/// folder inside the sweep folder, then writes one comparison. `--shard I/N` runs only the
/// combinations k with k mod N = I − 1, so a batch scheduler can spread the grid; finished runs
/// (those with a report.json) are skipped, so an interrupted sweep resumes.
public enum SweepWorkflow {
    public struct Axis: Equatable, Sendable {
        public var key: String
        public var values: [String]
    }

    /// Parses `key=v1,v2,...`.
    public static func parseAxis(_ text: String) throws -> Axis {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw RunError("--grid '\(text)': expected key.path=v1,v2,…")
        }
        let values = text[text.index(after: eq)...].split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard !values.isEmpty, !values.contains("") else {
            throw RunError("--grid '\(text)': give at least one value")
        }
        return Axis(key: String(text[..<eq]), values: values)
    }

    /// `--seeds 0,1,2`: the last axis, `training.seed`, so each grid point's seeds sit together.
    public static func parseSeeds(_ text: String, besides axes: [Axis]) throws -> Axis {
        let axis = try parseAxis("training.seed=\(text)")
        guard axis.values.allSatisfy({ UInt64($0) != nil }), Set(axis.values).count == axis.values.count
        else {
            throw RunError("--seeds '\(text)': expected distinct whole numbers ≥ 0, e.g. 0,1,2")
        }
        if axes.contains(where: { $0.key == "training.seed" }) {
            throw RunError("--seeds and --grid training.seed=… both set the seed; give one")
        }
        return axis
    }

    /// Parses `I/N` with 1 ≤ I ≤ N.
    public static func parseShard(_ text: String) throws -> (index: Int, count: Int) {
        let parts = text.split(separator: "/").map { Int($0) }
        guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, (1...n).contains(i) else {
            throw RunError("--shard '\(text)': expected I/N with 1 ≤ I ≤ N, e.g. 2/4")
        }
        return (i, n)
    }

    /// Every combination, in a fixed order (the last axis varies fastest).
    public static func combinations(_ axes: [Axis]) -> [[(String, String)]] {
        axes.reduce([[]]) { acc, axis in
            acc.flatMap { prefix in axis.values.map { prefix + [(axis.key, $0)] } }
        }
    }

    static func folderName(_ base: String, _ combo: [(String, String)]) -> String {
        let raw = ([base] + combo.map { "\($0.0)=\($0.1)" }).joined(separator: "--")
        return String(raw.map { $0.isLetter || $0.isNumber || "-_.=".contains($0) ? $0 : "_" })
    }

    public struct Summary: Sendable {
        public var directory: String
        public var trained: [String]
        public var skipped: [String]
        public var comparison: Comparison?
    }

    public static func run(
        configPath: String, overrides: [String], axes: [Axis], shard: (index: Int, count: Int),
        outDir: String?, observer: TrainingObserver?
    ) throws -> Summary {
        // Validate every combination before training any.
        let base = try Config.load(path: configPath, overrides: overrides)
        let combos = combinations(axes)
        for c in combos {
            _ = try Config.load(path: configPath, overrides: overrides + c.map { "\($0.0)=\($0.1)" })
        }
        let dir = outDir ?? "runs/\(base.name)-sweep"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var trained: [String] = [], skipped: [String] = []
        for (k, combo) in combos.enumerated() where k % shard.count == shard.index - 1 {
            let name = folderName(base.name, combo)
            let runDir = "\(dir)/\(name)"
            if FileManager.default.fileExists(atPath: "\(runDir)/report.json") {
                skipped.append(name); continue
            }
            observer?.message("sweep run \(k + 1)/\(combos.count): \(name)")
            let config = try Config.load(
                path: configPath, overrides: overrides + combo.map { "\($0.0)=\($0.1)" } + ["name=\(name)"])
            _ = try TrainWorkflow.run(config, outDir: runDir, force: true, observer: observer)
            trained.append(name)
        }
        let reports = (try? ReportWorkflow.collect([dir])) ?? []
        var comparison: Comparison?
        if reports.count >= 1 {
            let c = Comparison(reports, defaults: ReportWorkflow.effectiveDefaults)
            try CompareWorkflow.write(c, reports: reports, to: dir)
            comparison = c
        }
        return Summary(directory: dir, trained: trained, skipped: skipped, comparison: comparison)
    }
}
