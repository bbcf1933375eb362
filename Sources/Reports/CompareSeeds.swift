// Runs that differ only in their seed, compared as one column: mean ± standard deviation (n) of
// every figure, and differences smaller than their spread marked.
import Foundation

/// The mean, sample standard deviation and count of one figure over a group's runs.
public struct Spread: Codable, Equatable, Sendable {
    public var mean: Double
    /// √(Σ(x − mean)²/(n − 1)); nil for a single run.
    public var sd: Double?
    public var n: Int

    /// nil when there are no values.
    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        n = values.count
        mean = values.reduce(0, +) / Double(n)
        let m = mean
        sd = n > 1 ? (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(n - 1)).squareRoot() : nil
    }

    /// Whether `other − self` is smaller than the spread of a difference of one run of each,
    /// √(sd₁² + sd₂²): such a difference is not a measured effect. False unless both have an sd.
    public func overlaps(_ other: Spread) -> Bool {
        guard let a = sd, let b = other.sd else { return false }
        return abs(other.mean - mean) < (a * a + b * b).squareRoot()
    }

    /// "88.42" for one run, "88.42 ± 0.15" for several.
    var text: String { sd.map { "\(Format.pct(mean)) ± \(Format.pct($0))" } ?? Format.pct(mean) }
}

extension Comparison {
    /// The config keys a seed group may differ in.
    static let seedKeys: Set<String> = ["training.seed", "name"]

    /// Groups the reports whose configs agree except for the seed (and name), in order of first
    /// appearance. A run's config differences from its group's first run decide; seeds alone apart.
    static func seedGroups(_ reports: [Report]) -> [[Report]] {
        var groups: [[Report]] = [], keys: [[String: String]] = []
        for r in reports {
            let key = r.config.filter { !seedKeys.contains($0.key) }
            let seed = r.config["training.seed"]
            if let g = keys.indices.first(where: {
                keys[$0] == key && !groups[$0].contains { $0.config["training.seed"] == seed }
            }) {
                groups[g].append(r)
            } else {
                groups.append([r])
                keys.append(key)
            }
        }
        return groups
    }

    /// A group's column name: its runs' common name without the seed part of a sweep's folder
    /// names ("…--training.seed=1"), with the count; a single run keeps its own name.
    static func groupName(_ group: [Report]) -> String {
        guard group.count > 1 else { return group[0].run }
        let stripped = Set(
            group.map { r in
                r.run.components(separatedBy: "--").filter { !$0.hasPrefix("training.seed=") }
                    .joined(separator: "--")
            })
        let base = stripped.count == 1 ? stripped.first! : group[0].run
        return "\(base) (n=\(group.count))"
    }

    /// The group's mean of each layer statistic.
    static func layerStats(_ name: String, _ group: [Report], column: String) -> LayerStats? {
        let found = group.compactMap { r in r.layers.first { $0.name == name } }
        guard let first = found.first else { return nil }
        func mean(_ f: (Report.Layer) -> Double) -> Double {
            found.map(f).reduce(0, +) / Double(found.count)
        }
        return LayerStats(
            run: column, skewness: mean(\.skewness), kurtosis: mean(\.kurtosis),
            maxAbsOverStd: mean(\.maxAbsOverStd), sqnrDb: mean(\.sqnrDb), bits: first.bits)
    }

    /// A cell's spread mark: "†" when the difference from the first column is within the spread.
    func spreadMark(_ index: Int, in row: BitsRow) -> String {
        guard let base = row.runs.first(where: { $0.value != nil })?.spread,
            let s = row.runs[index].spread, base.overlaps(s)
        else { return "" }
        return "†"
    }

    /// What "± " and "†" mean, when some column has several runs.
    var spreadNote: String {
        guard groups.contains(where: { $0.count > 1 }) else { return "" }
        return
            " A column of several runs (n = seeds) shows mean ± sample standard deviation; † marks a difference from the first column smaller than √(sd₁² + sd₂²), the spread of a difference of single runs: not a measured effect. Single runs vary with the seed and, through the BLAS kernels, with the processor."
    }
}
