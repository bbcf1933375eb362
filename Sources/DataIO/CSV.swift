// CSV data sets: a label column and feature columns per line.
/// CSV data sets: one sample per line, the label in `labelColumn` and the features in the other
/// columns, comma separated. A first line that is not numeric is taken as a header and skipped.
public enum CSV {
    public static func dataset(path: String, labelColumn: Int = 0) throws -> Dataset {
        let raw = try readMaybeGzip(path)
        let text = String(decoding: raw, as: UTF8.self)
        var features: [Float] = [], labels: [Int64] = []
        var width = -1
        // "\r\n" is one Character in Swift: split on every line break, whatever the platform wrote.
        for (lineIndex, trimmed) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
            .enumerated()
        {
            if trimmed.isEmpty { continue }
            let cells = trimmed.split(separator: ",", omittingEmptySubsequences: false)
            let numbers = cells.map { Float(String($0).trimming(" \t")) }
            if lineIndex == 0 && numbers.contains(where: { $0 == nil }) { continue }  // header
            guard labelColumn < cells.count else {
                throw DataError(
                    "\(path):\(lineIndex + 1): no column \(labelColumn) for the label (line has \(cells.count) columns)"
                )
            }
            if width < 0 { width = cells.count }
            guard cells.count == width else {
                throw DataError(
                    "\(path):\(lineIndex + 1): \(cells.count) columns, the first data line has \(width)")
            }
            for (c, value) in numbers.enumerated() {
                guard let v = value, v.isFinite else {
                    throw DataError(
                        "\(path):\(lineIndex + 1): column \(c + 1) is not a finite number: '\(cells[c])'")
                }
                if c == labelColumn {
                    guard v == v.rounded(), v >= 0, v <= 65_535 else {
                        throw DataError(
                            "\(path):\(lineIndex + 1): label '\(cells[c])' is not a class index (0, 1, 2, …)")
                    }
                    labels.append(Int64(v))
                } else {
                    features.append(v)
                }
            }
        }
        guard !labels.isEmpty else { throw DataError("\(path): no data lines") }
        return Dataset(
            sampleShape: [width - 1], storage: .floats(features),
            labels: try checkedLabels(labels, path: path))
    }
}
