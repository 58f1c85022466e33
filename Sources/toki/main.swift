import ArgumentParser
import Dispatch
import Foundation
import NIOCore
import NIOPosix

// Run Swift tasks on NIO's event loops: a request then no longer hops between NIO's threads and
// the default executor's at every await (measured: the largest share of the hub's and worker's
// per-request CPU was thread switching). Nothing in toki blocks a task: SQLite runs on GRDB's
// own queues, HTTP and WebSockets are NIO. It must happen before the first task exists, hence a
// synchronous entry point that starts the command in a task.
_ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()

@Sendable func runToki() async {
    await Toki.main()
    exit(0)
}

Task { await runToki() }
dispatchMain()
