// Output folders that are never half-written and never lost: files go to a staging sibling, which
// takes the folder's place only when the job has succeeded. Without --force the folder is claimed
// first by an exclusive mkdir, so of two runs to one folder exactly one proceeds.
import Foundation

struct RunFolder {
    /// The folder the user named.
    let path: String
    /// Where the job writes meanwhile: `.NAME.partial-PID-UUID` beside it.
    let work: String
    /// This run created `path` (empty) as its claim.
    let claimed: Bool

    /// Claims `dir` (or, with `force`, leaves an existing one in place until `commit`). With
    /// `allowEmpty`, an existing empty folder is taken as it is.
    static func begin(_ dir: String, force: Bool, allowEmpty: Bool = false) throws -> RunFolder {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        let parent = url.deletingLastPathComponent().path, name = url.lastPathComponent
        guard !name.isEmpty, name != ".", name != "..", name != "/" else {
            throw RunError("\(dir): not a folder name QShape writes to (give a new folder)")
        }
        do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw RunError("\(parent): cannot create the folder (\(error.localizedDescription))")
        }
        removeAbandoned(in: parent, name: name)
        var isDir: ObjCBool = false
        var claimed = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw RunError("\(dir) exists and is not a folder") }
            let empty = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? ["?"]).isEmpty
            guard force || (allowEmpty && empty) else {
                throw RunError("\(dir) already exists\(allowEmpty ? " and is not empty" : ""): pass --force to replace it, or --out to choose another folder")
            }
        } else if !force {
            // mkdir fails if the folder appeared meanwhile: the claim is exclusive.
            guard mkdir(url.path, 0o755) == 0 else {
                throw RunError(errno == EEXIST ? "\(dir) already exists: pass --force to replace it, or --out to choose another folder"
                                                : "\(dir): cannot create the folder (\(String(cString: strerror(errno))))")
            }
            claimed = true
        }
        let work = "\(parent)/.\(name).partial-\(getpid())-\(UUID().uuidString.prefix(8))"
        guard mkdir(work, 0o755) == 0 else {
            if claimed { rmdir(url.path) }
            throw RunError("\(parent): cannot create a folder there (\(String(cString: strerror(errno))))")
        }
        return RunFolder(path: url.path, work: work, claimed: claimed)
    }

    /// Puts the finished files in place: over the claimed empty folder, or the old folder moved
    /// aside first and removed only after the new one is in place.
    func commit() throws {
        let fm = FileManager.default
        if Foundation.rename(work, path) == 0 { return }   // `path` absent, or an empty folder
        let old = work.replacingOccurrences(of: ".partial-", with: ".old-")
        guard Foundation.rename(path, old) == 0 else {
            throw RunError("\(path): cannot replace it (\(String(cString: strerror(errno)))); the new files are in \(work)")
        }
        guard Foundation.rename(work, path) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = Foundation.rename(old, path)
            throw RunError("\(path): cannot replace it (\(reason)); the new files are in \(work)")
        }
        try? fm.removeItem(atPath: old)
    }

    /// After a failure: the staging folder goes, and so does an empty folder this run claimed.
    func abandon() {
        try? FileManager.default.removeItem(atPath: work)
        if claimed { rmdir(path) }
    }

    /// Runs `body` writing into `work`, then commits; on any error abandons.
    func run<T>(_ body: (String) throws -> T) throws -> T {
        do {
            let result = try body(work)
            try commit()
            return result
        } catch {
            abandon()
            throw error
        }
    }

    /// Staging and old folders of runs whose process is gone (killed): removed on the next run.
    static func removeAbandoned(in parent: String, name: String) {
        let fm = FileManager.default
        for entry in (try? fm.contentsOfDirectory(atPath: parent)) ?? [] {
            for marker in [".\(name).partial-", ".\(name).old-"] where entry.hasPrefix(marker) {
                let pid = entry.dropFirst(marker.count).prefix { $0.isNumber }
                if let p = Int32(pid), p != getpid(), kill(p, 0) != 0, errno == ESRCH {
                    try? fm.removeItem(atPath: "\(parent)/\(entry)")
                }
            }
        }
    }
}
