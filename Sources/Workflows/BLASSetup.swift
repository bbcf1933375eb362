// OpenBLAS's kernels, chosen so they cannot silently fall back: at start-up the executable compares
// what OpenBLAS chose with what the processor can do and, when the library fell back to narrower
// kernels, re-executes itself with OPENBLAS_CORETYPE set (the only way to change the choice: the
// library makes it when it loads). The re-executed process checks the new kernels against a naive
// product and, should they disagree, re-executes once more with OpenBLAS's own choice. A variable
// the user set (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) is never overridden.
import Config
import Foundation
import Tensors

public enum BLASSetup {
    /// Set in the re-executed process: "CORE<-ORIGINAL", or "refused:CORE<-ORIGINAL" after a
    /// failed self-check.
    static let marker = "QSHAPE_BLAS_SELECTED"

    /// Called first thing by the executable; returns only when no re-execution is needed.
    public static func atStartup() {
        let env = ProcessInfo.processInfo.environment
        if let selected = env[marker] {
            // The re-executed process: keep the selection if OpenBLAS took it and computes right.
            guard !selected.hasPrefix("refused:") else { return }
            let core = selected.split(separator: "<").first.map(String.init) ?? ""
            if BLASLibrary.coreName.lowercased() != core.lowercased() || !BLASCoreChoice.selfCheck() {
                unsetenv("OPENBLAS_CORETYPE")
                reexecute(marker: "refused:\(selected)")
            }
            return
        }
        let p = Processor.current
        if case .select(let core, _) = BLASCoreChoice.decide(
            features: p.features, vendor: p.vendor,
            libraryCore: BLASLibrary.coreName, environment: env)
        {
            setenv("OPENBLAS_CORETYPE", core, 1)
            reexecute(marker: "\(core)<-\(BLASLibrary.coreName)")
            unsetenv("OPENBLAS_CORETYPE")  // exec failed: carry on with OpenBLAS's choice
        }
    }

    private static func reexecute(marker value: String) {
        setenv(marker, value, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv(marker)
    }

    /// What QShape did at start-up, in one line; nil when it left OpenBLAS's choice alone.
    public static var selectionNote: String? {
        guard let selected = ProcessInfo.processInfo.environment[marker] else { return nil }
        let refused = selected.hasPrefix("refused:")
        let parts = selected.dropFirst(refused ? 8 : 0).components(separatedBy: "<-")
        guard parts.count == 2 else { return nil }
        return refused
            ? "BLAS: kept OpenBLAS's \(parts[1]) kernels: \(parts[0]) did not compute correctly here"
            : "BLAS: OpenBLAS chose \(parts[1]) kernels for this \(ProcessorFeatures.levelName(Processor.current.features.level)) processor; QShape runs it on \(parts[0]) (OPENBLAS_CORETYPE; set it yourself, or QSHAPE_BLAS_SELECT=off, to decide)"
    }

    /// Who chose the kernels in use: "OpenBLAS", "QShape" or "OPENBLAS_CORETYPE".
    public static var chosenBy: String {
        let env = ProcessInfo.processInfo.environment
        if let s = env[marker], !s.hasPrefix("refused:") { return "QShape" }
        if env[marker] == nil, env["OPENBLAS_CORETYPE"] != nil { return "OPENBLAS_CORETYPE" }
        return "OpenBLAS"
    }

    /// The BLAS as a record: library, version, kernels, who chose them, threads.
    public struct Summary: Codable, Sendable, Equatable {
        public var library: String, version: String, core: String, chosenBy: String
        public var threads: Int
        enum CodingKeys: String, CodingKey { case library, version, core, threads, chosenBy = "chosen_by" }
    }

    public static var summary: Summary {
        Summary(
            library: "OpenBLAS", version: BLASLibrary.version, core: BLASLibrary.coreName, chosenBy: chosenBy,
            threads: BLASThreads.current)
    }

    /// "OpenBLAS 0.3.21, SkylakeX kernels (chosen by QShape), 2 threads"
    public static var line: String {
        let s = summary
        return
            "\(s.library) \(s.version), \(s.core) kernels (chosen by \(s.chosenBy)), \(s.threads) thread\(s.threads == 1 ? "" : "s")"
    }
}
