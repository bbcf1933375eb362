// Output folders that are never half-written and never lost: files go to a staging sibling, which
// takes the folder's place only when the job has succeeded. Without --force the folder is claimed
// first by an exclusive mkdir, so of two runs to one folder exactly one proceeds. A staging folder
// left by a killed run that holds a checkpoint is kept for `--resume`, which takes it over.
import Config
import Foundation

struct RunFolder {
    /// The folder the user named.
    let path: String
    /// Where the job writes meanwhile: `.NAME.partial-PID-UUID` beside it.
    let work: String
    /// This run created `path` (empty) as its claim, or took over a killed run's claim.
    let claimed: Bool
    /// `work` is a killed run's staging folder, taken over to resume it.
    var resumed = false

    /// Claims `dir` (or, with `force`, leaves an existing one in place until `commit`). With
    /// `allowEmpty`, an existing empty folder is taken as it is. With `resume`, the newest staging
    /// folder of a killed run that holds a file of that name becomes this run's.
    static func begin(
        _ dir: String, force: Bool, allowEmpty: Bool = false, resume: String? = nil
    ) throws -> RunFolder {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        let parent = url.deletingLastPathComponent().path, name = url.lastPathComponent
        guard !name.isEmpty, name != ".", name != "..", name != "/" else {
            throw RunError("\(dir): not a folder name QShape writes to (give a new folder)")
        }
        do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw RunError("\(parent): cannot create the folder (\(error.localizedDescription))")
        }
        let killed = abandoned(in: parent, name: name, holding: Checkpoint.fileName)
        if let resume { return try takeOver(killed, dir: dir, url: url, force: force, file: resume) }
        if !force, let newest = killed.first {
            throw RunError(
                "\(dir): a killed run left a checkpoint (\(Checkpoint.describe(newest.path))): pass --resume to continue it, or --force to start over"
            )
        }
        removeAbandoned(in: parent, name: name)
        var isDir: ObjCBool = false
        var claimed = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw RunError("\(dir) exists and is not a folder") }
            let empty = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? ["?"]).isEmpty
            guard force || (allowEmpty && empty) else {
                throw RunError(
                    "\(dir) already exists\(allowEmpty ? " and is not empty" : ""): pass --force to replace it, or --out to choose another folder"
                )
            }
        } else if !force {
            // mkdir fails if the folder appeared meanwhile: the claim is exclusive.
            guard mkdir(url.path, 0o755) == 0 else {
                throw RunError(
                    errno == EEXIST
                        ? "\(dir) already exists: pass --force to replace it, or --out to choose another folder"
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
        if Foundation.rename(work, path) == 0 { return }  // `path` absent, or an empty folder
        let old = work.replacingOccurrences(of: ".partial-", with: ".old-")
        guard Foundation.rename(path, old) == 0 else {
            throw RunError(
                "\(path): cannot replace it (\(String(cString: strerror(errno)))); the new files are in \(work)"
            )
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

    /// Runs `body` writing into `work`, then commits; on any error abandons, except one that
    /// says the checkpoint is kept (`RunError.keepsCheckpoint`).
    func run<T>(_ body: (String) throws -> T) throws -> T {
        do {
            let result = try body(work)
            try commit()
            return result
        } catch {
            if (error as? RunError)?.keepsCheckpoint != true { abandon() }
            throw error
        }
    }

    /// The staging folders of killed runs for `name` that hold `file`, newest first.
    static func abandoned(
        in parent: String, name: String, holding file: String
    ) -> [(path: String, modified: Date)] {
        let fm = FileManager.default
        let marker = ".\(name).partial-"
        return ((try? fm.contentsOfDirectory(atPath: parent)) ?? []).compactMap { entry in
            guard entry.hasPrefix(marker),
                let pid = Int32(entry.dropFirst(marker.count).prefix { $0.isNumber }),
                pid != getpid(), kill(pid, 0) != 0, errno == ESRCH,
                let attributes = try? fm.attributesOfItem(atPath: "\(parent)/\(entry)/\(file)"),
                let date = attributes[.modificationDate] as? Date
            else { return nil }
            return ("\(parent)/\(entry)", date)
        }.sorted { $0.modified > $1.modified }
    }

    /// `--resume`: renames the newest killed run's staging folder to this process's (atomic: of
    /// two resuming runs one gets it), removes older ones, and claims the folder as a new run would.
    private static func takeOver(
        _ killed: [(path: String, modified: Date)], dir: String, url: URL,
        force: Bool, file: String
    ) throws -> RunFolder {
        guard let newest = killed.first else {
            throw RunError("\(dir): no checkpoint of a killed run to resume (run without --resume to start)")
        }
        let parent = url.deletingLastPathComponent().path, name = url.lastPathComponent
        let work = "\(parent)/.\(name).partial-\(getpid())-\(UUID().uuidString.prefix(8))"
        guard Foundation.rename(newest.path, work) == 0 else {
            throw RunError("\(dir): the checkpoint is being resumed by another run")
        }
        for older in killed.dropFirst() { try? FileManager.default.removeItem(atPath: older.path) }
        removeAbandoned(in: parent, name: name)
        var isDir: ObjCBool = false
        var claimed = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) {
            let empty =
                isDir.boolValue
                && ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? ["?"]).isEmpty
            // The killed run's (empty) claim is this run's now; a finished folder needs --force.
            guard empty || force else {
                throw RunError(
                    "\(dir) already exists and is not empty: pass --resume --force to replace it when the resumed run ends"
                )
            }
            claimed = empty
        } else if mkdir(url.path, 0o755) == 0 {
            claimed = true
        } else {
            throw RunError("\(dir): cannot create the folder (\(String(cString: strerror(errno))))")
        }
        return RunFolder(path: url.path, work: work, claimed: claimed, resumed: true)
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
