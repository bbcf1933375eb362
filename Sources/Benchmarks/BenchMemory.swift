// `qshape bench --only memory`: the peak resident memory of a real `qshape train` of each example
// config (Fashion-MNIST loaded, training, the integer conversion at the end), measured on a child
// process by the kernel (getrusage's ru_maxrss through wait4).
import Config
import Workflows
import Foundation

extension BenchWorkflow {
    public struct MemoryUse: Codable, Sendable {
        public var example: String
        public var steps: Int
        public var peakMegabytes: Double
        enum CodingKeys: String, CodingKey {
            case example, steps
            case peakMegabytes = "peak_rss_mb"
        }
    }

    static func runMemory(_ r: inout Result, log: (String) -> Void) throws {
        guard FileManager.default.fileExists(atPath: DataConfig.fashionMNISTDirectory) else {
            log("memory: skipped (Fashion-MNIST is not installed)")
            return
        }
        let dir = NSTemporaryDirectory() + "qshape-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for example in exampleConfigs {
            let config = "\(examplesDirectory)/\(example).yaml"
            guard FileManager.default.fileExists(atPath: config) else {
                log("memory: skipped (\(config) is not there)")
                return
            }
            let steps = 200
            let (status, kilobytes) = try childPeakRSS([
                "train", config, "--out", "\(dir)/\(example)", "--set", "training.epochs=1",
                "--set", "training.max_steps_per_epoch=\(steps)"
            ])
            guard status == 0 else {
                throw RunError("bench memory: qshape train \(example) failed (status \(status))")
            }
            let m = MemoryUse(example: example, steps: steps, peakMegabytes: Double(kilobytes) / 1024)
            log(
                String(
                    format: "memory %@ train (%d steps, then the integer conversion): peak RSS %.0f MB",
                    example as NSString, steps, m.peakMegabytes))
            r.memory.append(m)
        }
    }

    /// Runs `exe` (by default this executable) with `arguments`, its output discarded, and returns
    /// its exit status and the kernel's count of its peak resident memory in KiB.
    static func childPeakRSS(
        _ arguments: [String], executable exe: String = "/proc/self/exe"
    ) throws -> (status: Int32, kilobytes: Int) {
        let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        // The child writes its own peak (VmHWM) when it exits: wait4's ru_maxrss would also count
        // this process's resident memory, which a spawned child's record inherits at exec.
        let report = NSTemporaryDirectory() + "qshape-peak-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: report) }
        let environment =
            ProcessInfo.processInfo.environment.filter { $0.key != peakMemoryVariable }
            .map { "\($0.key)=\($0.value)" } + ["\(peakMemoryVariable)=\(report)"]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for e in envp { free(e) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, exe, &actions, nil, argv, envp)
        guard spawned == 0 else {
            throw RunError("bench memory: cannot start \(exe) (\(String(cString: strerror(spawned))))")
        }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else {
                throw RunError("bench memory: wait4 failed (\(String(cString: strerror(errno))))")
            }
        }
        let exited = (status & 0x7f) == 0
        let own = (try? String(contentsOfFile: report, encoding: .utf8)).flatMap {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), own ?? usage.ru_maxrss)
    }

    /// The environment variable naming the file a `qshape` process writes its peak resident memory
    /// to (kilobytes) when it exits.
    static let peakMemoryVariable = "QSHAPE_PEAK_RSS_FILE"

    /// Called first by the executable: with `QSHAPE_PEAK_RSS_FILE` set, the process writes its own
    /// peak resident memory (VmHWM of /proc/self/status) there at exit.
    public static func reportPeakMemoryAtExit() {
        guard ProcessInfo.processInfo.environment[peakMemoryVariable] != nil else { return }
        atexit {
            guard let path = getenv(BenchWorkflow.peakMemoryVariable).map({ String(cString: $0) }),
                let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                let kilobytes = line.split(separator: " ").compactMap({ Int($0) }).first
            else { return }
            try? "\(kilobytes)\n".write(toFile: path, atomically: false, encoding: .utf8)
        }
    }
}
