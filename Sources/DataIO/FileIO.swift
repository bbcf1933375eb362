import Foundation
import CZlib

/// Reads a whole file, transparently gunzipping it when it is gzip-compressed.
/// At most `limit` bytes are read (a gzip file can unpack to far more than it holds): callers that
/// know the size from a header pass it, plus one to see whether the file holds more.
public func readMaybeGzip(_ path: String, limit: Int = Int.max) throws -> [UInt8] {
    guard FileManager.default.fileExists(atPath: path) else { throw DataError("\(path): no such file") }
    guard let gz = gzopen(path, "rb") else { throw DataError("\(path): cannot be opened") }
    defer { gzclose(gz) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while out.count < limit {
        let want = min(chunk.count, limit - out.count)
        let n = chunk.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32(want)) }
        if n < 0 { throw DataError("\(path): corrupt or truncated gzip data") }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<Int(n)])
    }
    return out
}

/// Writes a file atomically: the bytes go to a temporary file beside it, which is then renamed
/// over the destination, so a reader (or an interrupted run) never sees half a file.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
    let url = URL(fileURLWithPath: path)
    do {
        try Data(bytes).write(to: url, options: .atomic)
    } catch {
        throw DataError("\(path): cannot be written (\(error.localizedDescription))")
    }
}

public func writeAtomically(_ text: String, to path: String) throws {
    try writeAtomically(Array(text.utf8), to: path)
}
