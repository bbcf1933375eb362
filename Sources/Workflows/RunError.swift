// A failure of a run that is neither the config's nor the data's fault.

/// A failure that is not a config or data problem (an existing run folder, say).
public struct RunError: Error, CustomStringConvertible, Sendable {
    public let message: String
    /// The run's staging folder stays, for `--resume` (a diverged run's last good checkpoint).
    public var keepsCheckpoint = false
    public init(_ message: String, keepsCheckpoint: Bool = false) {
        self.message = message
        self.keepsCheckpoint = keepsCheckpoint
    }
    public var description: String { message }
}
