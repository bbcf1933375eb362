// Tests: Docs/Reports.md's Slurm job-array recipe, run as written on a single-node Slurm that the
// test configures, starts and stops on this machine.
import XCTest
import Foundation

final class SlurmTests: XCTestCase {
    /// A one-node Slurm (Debian's slurm-wlm, munge for authentication) in a temporary folder:
    /// its own config, state, logs and ports, so nothing of the machine's is touched.
    final class Cluster {
        let dir: String
        let conf: String
        var startedMunge = false

        init(dir: String) throws {
            self.dir = dir
            conf = "\(dir)/slurm.conf"
            let host =
                ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
            try FileManager.default.createDirectory(atPath: "\(dir)/state", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(dir)/spool", withIntermediateDirectories: true)
            let cpus = ProcessInfo.processInfo.activeProcessorCount
            try """
            ClusterName=qshape-test
            SlurmctldHost=\(host)
            SlurmUser=root
            SlurmdUser=root
            AuthType=auth/munge
            CredType=cred/munge
            StateSaveLocation=\(dir)/state
            SlurmdSpoolDir=\(dir)/spool
            SlurmctldPidFile=\(dir)/slurmctld.pid
            SlurmdPidFile=\(dir)/slurmd.pid
            SlurmctldPort=16817
            SlurmdPort=16818
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            MpiDefault=none
            ReturnToService=2
            SlurmctldLogFile=\(dir)/slurmctld.log
            SlurmdLogFile=\(dir)/slurmd.log
            NodeName=\(host) CPUs=\(cpus) State=UNKNOWN
            PartitionName=test Nodes=\(host) Default=YES MaxTime=INFINITE State=UP

            """.write(toFile: conf, atomically: true, encoding: .utf8)
        }

        func start() throws {
            if try Recipes.bash("munge -n >/dev/null 2>&1", in: dir).status != 0 {
                let m = try daemon("mkdir -p /run/munge && munged --force", log: "munged.out")
                XCTAssertEqual(
                    m, 0, (try? String(contentsOfFile: "\(dir)/munged.out", encoding: .utf8)) ?? "")
                startedMunge = true
            }
            for daemon in ["slurmctld", "slurmd"] {
                XCTAssertEqual(
                    try self.daemon("\(daemon) -f '\(conf)'", log: "\(daemon).out"), 0, "\(daemon): \(log())")
            }
            // Up when the node is idle (a few seconds).
            for _ in 0..<100 {
                if try Recipes.bash("SLURM_CONF='\(conf)' sinfo -h -o %t", in: dir).output.contains("idle") {
                    return
                }
                usleep(200_000)
            }
            XCTFail("the test cluster did not come up: \(log())")
        }

        /// Starts a daemon with nothing of ours open: a daemon keeps every descriptor it inherits,
        /// and one left holding the test's output pipe would keep the test waiting for ever.
        func daemon(_ command: String, log: String) throws -> Int32 {
            try Recipes.bash(
                "for fd in $(ls /proc/$$/fd); do [ $fd -gt 2 ] && eval \"exec $fd>&-\"; done 2>/dev/null; \(command) </dev/null >'\(dir)/\(log)' 2>&1",
                in: dir
            ).status
        }

        func stop() {
            _ = try? Recipes.bash("SLURM_CONF='\(conf)' scancel --user=root 2>/dev/null", in: dir)
            for pid in ["slurmd.pid", "slurmctld.pid"] {
                _ = try? Recipes.bash("kill $(cat '\(dir)/\(pid)') 2>/dev/null", in: dir)
            }
            if startedMunge {
                _ = try? Recipes.bash("kill $(cat /run/munge/munged.pid) 2>/dev/null", in: dir)
            }
        }

        func log() -> String {
            ["slurmctld.log", "slurmd.log"].compactMap {
                try? String(contentsOfFile: "\(dir)/\($0)", encoding: .utf8).split(separator: "\n").suffix(5)
                    .joined(separator: "\n")
            }.joined(separator: "\n")
        }
    }

    /// The job-array recipe as written (the sweep shortened and pointed at the fixture), submitted
    /// with the compare job that waits for it; the merged comparison's runs equal the unsharded sweep.
    func testSlurmJobArrayRecipeMatchesTheUnshardedSweep() throws {
        for tool in ["slurmctld", "slurmd", "sbatch", "munged"] { _ = try requireTool(tool) }
        guard getuid() == 0 else { throw XCTSkip("starting slurmd needs root") }
        let dir = try Recipes.workspace(temporaryDirectory(self))
        let cluster = try Cluster(dir: "\(dir)/slurm")
        try cluster.start()
        defer { cluster.stop() }
        let shortening = (Recipes.data + Recipes.short).joined(separator: " ")
        let batch = try Recipes.recipe(after: "A Slurm job array").replacingOccurrences(
            of: "    --shard ${SLURM_ARRAY_TASK_ID}", with: "    \(shortening) --shard ${SLURM_ARRAY_TASK_ID}"
        )
        XCTAssertTrue(batch.contains("#SBATCH --array=1-6") && batch.contains(shortening), batch)
        try batch.write(toFile: "\(dir)/sweep.sbatch", atomically: true, encoding: .utf8)
        let submit = try Recipes.recipe(after: "#SBATCH --cpus-per-task")
        XCTAssertTrue(submit.contains("sbatch --parsable sweep.sbatch"), submit)
        let r = try Recipes.bash("set -e\nexport SLURM_CONF='\(cluster.conf)'\n" + submit, in: dir)
        XCTAssertEqual(r.status, 0, r.output)
        // Wait for the array and the compare job (a few seconds each on the fixture).
        var done = false
        for _ in 0..<600 where !done {
            let queue = try Recipes.bash("SLURM_CONF='\(cluster.conf)' squeue -h", in: dir).output
            done = queue.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            if !done { usleep(500_000) }
        }
        XCTAssertTrue(done, "jobs still queued after 5 minutes: \(cluster.log())")
        XCTAssertTrue(
            FileManager.default.fileExists(atPath: "\(dir)/runs/kurtosis-sweep/compare.html"),
            "no merged comparison; slurm output: \((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])"
        )
        let unsharded = try qshape(
            [
                "sweep", "Examples/fashion-mlp-kurtosis.yaml", "--grid", "shaping.kurtosis.weight=0,0.1,1",
                "--grid", "shaping.kurtosis.target=1.8,3.0", "--out", "runs/whole"
            ] + Recipes.data + Recipes.short, in: dir)
        XCTAssertEqual(unsharded.status, 0, unsharded.stderr)
        try Recipes.assertSameRuns("\(dir)/runs/kurtosis-sweep", "\(dir)/runs/whole", count: 6)
    }
}
