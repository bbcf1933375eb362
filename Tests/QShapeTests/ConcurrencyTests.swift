// Tests: the shaping passes shared between threads give the one-thread result bit for bit.
import Foundation
import XCTest
import Tensors
import NeuralNet
@testable import Training
import DataIO
import Shaping
@testable import Benchmarks
@testable import Workflows
@testable import Config

/// The shaping penalties on a second thread, shared with the main thread block by block: every
/// block runs once, and the results are the same bits as on one thread.
final class ConcurrencyTests: XCTestCase {
    /// A thread that helps (`helpUntil`) until told to stop.
    final class Helper: @unchecked Sendable {
        let sharing: BlockSharing
        private let lock = NSLock()
        private var stopped = false, finished = false
        init(_ sharing: BlockSharing) {
            self.sharing = sharing
            Thread { [self] in
                sharing.helpUntil { isStopped }
                lock.withLock { finished = true }
            }.start()
        }
        private var isStopped: Bool { lock.withLock { stopped } }
        func stop() {
            lock.withLock { stopped = true }
            while !lock.withLock({ finished }) { sched_yield() }
        }
    }

    func testEveryBlockRunsOnceWhileAnotherThreadHelps() {
        let sharing = BlockSharing(), helper = Helper(sharing)
        defer { helper.stop() }
        let owner = Thread.current
        var rng = SeededRandom(seed: 9)
        var helped = 0
        let data = (0..<4096).map { Float($0) }
        for _ in 0..<2000 {
            let count = 1 + rng.below(300)
            var hits = [Int](repeating: 0, count: count), byHelper = [Bool](repeating: false, count: count)
            hits.withUnsafeMutableBufferPointer { h in
                byHelper.withUnsafeMutableBufferPointer { b in
                    sharing.forEach(count) { i in
                        var sum: Float = 0  // some work per block
                        for x in data { sum += x }
                        h[i] += sum > 0 ? 1 : 0
                        b[i] = Thread.current != owner
                    }
                }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: count))
            helped += byHelper.filter { $0 }.count
        }
        if ProcessInfo.processInfo.activeProcessorCount > 1 {
            XCTAssertGreaterThan(helped, 0, "the helper ran some blocks")
        }
    }

    /// Every job runs once, whether the side thread runs it or the caller takes it back (waiting at
    /// once, the caller often does), woken ahead with `prepare` or not.
    func testSideThreadRunsEveryJobOnce() {
        let side = SideThread()
        defer { side.stop() }
        let runs = UnsafeMutableBufferPointer<Int>.allocate(capacity: 600),
            ranHere = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
        defer { runs.deallocate(); ranHere.deallocate() }
        runs.initialize(repeating: 0)
        var byCaller = 0
        let caller = Thread.current
        for j in 0..<runs.count {
            if j % 3 == 0 { side.prepare() }
            ranHere.pointee = false
            side.run {
                runs[j] += 1; ranHere.pointee = Thread.current == caller
            }
            if j % 2 == 0 { usleep(50) }  // gives the side thread time to take it
            side.wait()
            if ranHere.pointee { byCaller += 1 }
        }
        XCTAssertEqual(Array(runs), [Int](repeating: 1, count: 600))
        XCTAssertLessThan(byCaller, 600, "the side thread ran some jobs")
    }

    /// The probes of each window decide what the rest of it runs.
    func testParallelChoiceFollowsTheFasterProbes() {
        var c = ParallelChoice()
        let w = ParallelChoice.window, p = ParallelChoice.probes
        for s in 0..<(3 * w) {
            let k = s % w, window = s / w
            XCTAssertEqual(c.current, k < p ? false : k < 2 * p ? true : window != 1, "step \(s)")
            // Window 1's parallel steps are slow (the second processor busy); the others' fast.
            c.record(seconds: c.current ? (window == 1 ? 2e-3 : 1e-3) : 1.5e-3)
        }
    }

    /// Every term on, the range term active on every weight: the moments, the range and
    /// quantisation sums and the gradients with a helper equal those without, bit for bit.
    func testSharedPenaltiesAreTheSameBits() {
        var s = PenaltySettings(Set(PenaltyTerm.allCases))
        s.rangeTarget = 1.0; s.quantErrorBits = 3
        let scales: [PenaltyTerm: Double] = [
            .kurtosis: 1, .skewness: 0.5, .range: 0.3, .quantError: 0.7, .l2: 0.01
        ]
        let w = PenaltyTests.sample("skewed", 70_001, seed: 12)
        func run() -> (PenaltyState, [Float]) {
            var g = [Float](repeating: 0, count: w.count)
            let st = w.withUnsafeBufferPointer { wp in
                g.withUnsafeMutableBufferPointer { gp in
                    Penalties.addGradient(
                        wp, gp, Penalties.evaluate(wp, s, deferring: true), s, scales: scales)
                }
            }
            return (st, g)
        }
        let (alone, gAlone) = run()
        let sharing = BlockSharing(), helper = Helper(sharing)
        for _ in 0..<20 {
            let (shared, gShared) = BlockSharing.$current.withValue(sharing) { run() }
            XCTAssertEqual(
                [
                    shared.mean, shared.m2, shared.m3, shared.m4, shared.range, shared.rangeMeanS,
                    shared.quantError, shared.quantCross
                ],
                [
                    alone.mean, alone.m2, alone.m3, alone.m4, alone.range, alone.rangeMeanS, alone.quantError,
                    alone.quantCross
                ])
            XCTAssertEqual(shared.argMax, alone.argMax)
            XCTAssertEqual(gShared, gAlone)
        }
        helper.stop()
    }

    /// Training with the batches gathered during the optimiser update and the penalties on two
    /// threads gives the weights of training on the main thread alone, with penalties or without.
    func testParallelStepsTrainTheSameWeights() throws {
        let data = Self.randomImages(512)
        for shaped in [true, false] {
            let serial = try Self.train(data, shaped: shaped, parallel: false)
            XCTAssertEqual(try Self.train(data, shaped: shaped, parallel: true), serial, "shaped: \(shaped)")
        }
    }

    /// The optimiser's update of a large tensor, its blocks shared with a helping thread, is the
    /// same bits as on one thread, for Adam, AdamW and SGD with Nesterov momentum.
    func testSharedOptimizerUpdateIsTheSameBits() {
        let n = 5 * updateBlock + 37
        var rng = SeededRandom(seed: 21)
        let start = (0..<n).map { _ in rng.uniform(-0.5, 0.5) }
        let grads = (0..<3).map { _ in (0..<n).map { _ in rng.uniform(-5e-3, 5e-3) } }
        for kind in [OptimizerConfig.Kind.adam, .adamw, .sgd] {
            func run(_ sharing: BlockSharing?) -> [Float] {
                let p = Parameter("w", role: .weight, value: Tensor(shape: [n], data: start))
                var config = OptimizerConfig()
                config.kind = kind; config.weightDecay = 0.01; config.momentum = 0.9; config.nesterov = true
                let optimizer = Optimizer(config, parameters: [p])
                for g in grads {
                    p.grad = Tensor(shape: [n], data: g)
                    BlockSharing.$current.withValue(sharing) { optimizer.step(learningRate: 1e-3) }
                }
                return p.value.data
            }
            let sharing = BlockSharing(), helper = Helper(sharing)
            let alone = run(nil)
            for _ in 0..<10 { XCTAssertEqual(run(sharing), alone, "\(kind)") }
            helper.stop()
            XCTAssertNotEqual(alone, start)
        }
    }

    /// An epoch that ends early (here a checkpoint fails) while the next batch is being gathered
    /// ahead leaves the side thread idle: the next epoch trains as usual.
    func testAnEpochEndingEarlyLeavesNoBatchGatheredAhead() throws {
        struct Stop: Error {}
        try XCTSkipIf(
            ProcessInfo.processInfo.activeProcessorCount < 2, "one processor: nothing is gathered ahead")
        let data = Self.randomImages(512)
        for shaped in [true, false] {
            let (model, trainer) = try Self.trainer(data, shaped: shaped, parallel: true, checkpointSteps: 1)
            // Steps 3–5 of the first window run on two threads: step 4's batch is gathered ahead.
            var seen = 0
            XCTAssertThrowsError(
                try trainer.trainEpoch(
                    0, train: data,
                    checkpoint: { _ in
                        XCTAssertEqual(trainer.isGatheringAhead, seen >= 2 && seen <= 4, "step \(seen + 1)")
                        seen += 1
                        if seen == 4 { throw Stop() }
                    }))
            XCTAssertFalse(trainer.isGatheringAhead)
            let before = model.namedState.map { $0.parameter.value.data }
            let metrics = try trainer.trainEpoch(1, train: data)
            XCTAssertEqual(metrics.epoch, 2)
            XCTAssertNotEqual(model.namedState.map { $0.parameter.value.data }, before)
        }
    }

    static func randomImages(_ count: Int) -> Dataset {
        var rng = SeededRandom(seed: 3)
        return Dataset(
            sampleShape: [1, 28, 28],
            storage: .bytes((0..<(count * 784)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }),
            labels: (0..<count).map { _ in Int32(rng.below(10)) })
    }

    static func trainer(
        _ data: Dataset, shaped: Bool, parallel: Bool, checkpointSteps: Int = 0
    ) throws -> (Sequential, Trainer) {
        let specs: [LayerSpec] = [
            .flatten, .dense(inFeatures: 784, outFeatures: 64, bias: true), .relu,
            .dense(inFeatures: 64, outFeatures: 10, bias: true)
        ]
        var config = BenchWorkflow.shapingTerms(PenaltyTerm.allCases)
        config.terms[.range]?.target = 1.5
        let model = try Sequential(specs: specs, inputShape: [1, 28, 28], seed: 1)
        var options = TrainingOptions()
        options.batchSize = 64
        options.overlapSteps = parallel
        options.checkpointSteps = checkpointSteps
        let trainer = Trainer(model: model, options: options, trainingSetSize: data.count)
        if shaped { trainer.lossTerms = [ShapingLossTerm(config, model: model)] }
        return (model, trainer)
    }

    static func train(_ data: Dataset, shaped: Bool, parallel: Bool) throws -> [[Float]] {
        let (model, trainer) = try trainer(data, shaped: shaped, parallel: parallel)
        for epoch in 0..<2 { _ = try trainer.trainEpoch(epoch, train: data) }
        return model.namedState.map { $0.parameter.value.data }
    }
}

/// The trainer leaves the gradients the shaping term writes (`setsGradients`) to it: whatever
/// they held before a step, shaped training is the same, during the warm-up (the term writes
/// zeros) and after.
final class GradientsTheTermWritesTests: XCTestCase {
    func testWhatTheGradientsHeldBeforeAStepDoesNotMatter() throws {
        let data = ConcurrencyTests.randomImages(256)
        func train(scribble: Bool) throws -> [[Float]] {
            let (model, trainer) = try ConcurrencyTests.trainer(data, shaped: false, parallel: false)
            var config = BenchWorkflow.shapingTerms([.kurtosis, .quantError])
            config.warmupEpochs = 1; config.startEpoch = 1
            let term = ShapingLossTerm(config, model: model)
            trainer.lossTerms = [term]
            XCTAssertEqual(term.setsGradients.count, 2)
            for epoch in 0..<3 {
                if scribble {
                    for p in model.trainableParameters {
                        p.grad.data.withUnsafeMutableBufferPointer { $0.update(repeating: .nan) }
                    }
                }
                _ = try trainer.trainEpoch(epoch, train: data)
            }
            return model.trainableParameters.map(\.value.data)
        }
        let clean = try train(scribble: false)
        XCTAssertTrue(try train(scribble: true) == clean, "the weights differ")
        XCTAssertFalse(clean.joined().contains { !$0.isFinite })
    }
}
