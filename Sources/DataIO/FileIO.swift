// Reading files (gzip or plain, with a size limit) and writing them atomically.
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

/// CRC-32 (zlib's) of a file's bytes as stored, read in 1 MiB pieces, and its size; nil when it
/// cannot be read. Records which data set a run was trained on.
public func fileChecksum(_ path: String) -> (crc32: UInt32, bytes: Int)? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var crc = crc32(0, nil, 0), total = 0
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        crc = chunk.withUnsafeBytes { crc32(crc, $0.bindMemory(to: Bytef.self).baseAddress, uInt(n)) }
        total += n
    }
    return ferror(f) == 0 ? (UInt32(crc), total) : nil
}

/// Writes a file atomically: the bytes go to a temporary file beside it (`.NAME.tmp-PID-…`, opened
/// exclusively, flushed to disk), which is then renamed over the destination, so a reader (or an
/// interrupted run) never sees half a file. A temporary file left by a killed process is removed
/// by the next write to the same path.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path, name = url.lastPathComponent
    removeStaleTemporaries(in: dir, prefix: ".\(name).tmp-")
    let temporary = "\(dir)/.\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    func failure(_ what: String) -> DataError {
        DataError("\(path): cannot be written (\(what): \(String(cString: strerror(errno))))")
    }
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw failure("create") }
    var written = 0
    let ok = bytes.withUnsafeBytes { raw -> Bool in
        while written < raw.count {
            let n = write(fd, raw.baseAddress! + written, raw.count - written)
            if n < 0 { if errno == EINTR { continue }; return false }
            written += n
        }
        return fsync(fd) == 0
    }
    let error = ok ? nil : failure("write")
    close(fd)
    if let error { unlink(temporary); throw error }
    guard rename(temporary, path) == 0 else {
        let e = failure("rename")
        unlink(temporary)
        throw e
    }
}

/// Removes `dir/PREFIX<pid>-…` files whose process is gone.
func removeStaleTemporaries(in dir: String, prefix: String) {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
    for entry in entries where entry.hasPrefix(prefix) {
        let pid = entry.dropFirst(prefix.count).prefix { $0.isNumber }
        if let p = Int32(pid), p != getpid(), kill(p, 0) != 0, errno == ESRCH { unlink("\(dir)/\(entry)") }
    }
}

public func writeAtomically(_ text: String, to path: String) throws {
    try writeAtomically(Array(text.utf8), to: path)
}
