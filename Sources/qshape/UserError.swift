// How each error a command reports becomes one line and an exit status.
import Foundation
import DataIO
import NeuralNet
import Reports
import Export
import Config
import Workflows

/// How the command line reports a failure: one line, and the exit status.
public enum UserError {
    /// 2 for a bad config, data or weights file (the user's input); 1 for anything else.
    public static func describe(_ error: Error) -> (message: String, status: Int32) {
        switch error {
        case let e as ConfigError: return (e.description, 2)
        case let e as DataError: return (e.description, 2)
        case let e as ModelError: return (e.description, 2)
        case let e as RunError: return (e.description, 1)
        case let e as ReportError: return (e.description, 2)
        case let e as ExportError: return (e.description, 2)
        case let e as CocoaError:
            // A file-system failure: its sentence and the path, on one line.
            let path = (e.userInfo[NSFilePathErrorKey] as? String).map { "\($0): " } ?? ""
            return (path + e.localizedDescription.split(separator: "\n").joined(separator: " "), 1)
        default: return ("\(error)".split(separator: "\n").joined(separator: " "), 1)
        }
    }
}
