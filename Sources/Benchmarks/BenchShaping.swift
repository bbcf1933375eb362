// `qshape bench --only shaping`: training with the shaping penalties against the same training
// without, measured interleaved, and each penalty's cost on its own.
import Foundation
import NeuralNet
import Shaping
import Training

extension BenchWorkflow {
    static func runShaping(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            for (label, config) in shapingCases {
                // The MLP's rounds are whole epochs of Fashion-MNIST's size (469 steps): what
                // the penalties cost changes as the weights move away from their initial values.
                let steps = name.contains("cnn") ? 20 : 469
                var plain = 0.0, shaped = 0.0, serial = 0.0, penaltyMilliseconds = 0.0
                for _ in 0..<3 {  // interleaved, best of three each: the machine's load hits all alike
                    plain = max(
                        plain,
                        try trainingRate(layers: layers, batch: batch, steps: steps, threads: cores)
                            .samplesPerSecond)
                    var term: TimedLossTerm?  // the last one made: the timed trainer's
                    let rate = try trainingRate(layers: layers, batch: batch, steps: steps, threads: cores) {
                        let t = TimedLossTerm(ShapingLossTerm(config, model: $0)); term = t; return [t]
                    }.samplesPerSecond
                    if rate > shaped { (shaped, penaltyMilliseconds) = (rate, term!.millisecondsPerCall) }
                    serial = max(
                        serial,
                        try trainingRate(
                            layers: layers, batch: batch, steps: steps, threads: cores, overlap: false
                        ) {
                            [ShapingLossTerm(config, model: $0)]
                        }.samplesPerSecond)
                }
                let o = ShapingOverhead(
                    network: name, terms: label, unshapedSamplesPerSecond: plain,
                    shapedSamplesPerSecond: shaped, overhead: plain / shaped - 1,
                    penaltyMillisecondsPerStep: penaltyMilliseconds,
                    serialShapedSamplesPerSecond: serial, serialOverhead: plain / serial - 1)
                log(
                    String(
                        format:
                            "shaping %@ %@: %9.0f vs %9.0f samples/s unshaped  →  %+.1f%% time per epoch (penalties %.3f of %.3f ms per step; on the main thread alone %+.1f%%)",
                        name as NSString, label as NSString, shaped, plain, 100 * o.overhead,
                        penaltyMilliseconds, 1000 * Double(batch) / shaped,
                        100 * o.serialOverhead))
                r.shaping.append(o)
            }
        }
        for (name, layers) in try networks() {
            let costs = try penaltyCosts(network: name, layers: layers)
            log(
                "shaping \(name) penalties alone, ms per step on \(costs[0].weights) weights: "
                    + costs.map { String(format: "%@ %.3f", $0.term as NSString, $0.millisecondsPerStep) }
                    .joined(separator: ", "))
            r.penaltyCosts += costs
        }
    }
}
