#pragma once
// The start-up agreement (issue 16): before any other collective, every rank of an MPI job says
// whether its start (command line, config) succeeded, and all ranks go on, or all stop, together.
// Without it a rank whose command line failed (an unknown flag, --help, a config file missing on
// its host) returned quietly while the others waited forever in their first collective.
#include <string>

namespace deeptrain {

struct StartupVerdict {
  bool proceed = true;  // every rank started
  int exit_code = 0;    // else: the first failed rank's exit code (2 for bad input)
  int failed_rank = -1;
  std::string message;  // "rank 1 on host-b: <its error>", for every rank to print
};

// Called by every rank once, right after parsing its command line and reading its config.
// ok false: this rank cannot run (exit_code, message: why). Exchanges the outcomes through rank 0
// with a deadline: a rank that does not arrive within timeout_s seconds (it crashed, hangs, or
// runs a command that skips the agreement) ends the job (MPI_Abort) with a message naming it.
// Needs an active MpiRuntime (main's); a job of one rank returns its own outcome at once.
StartupVerdict agree_on_startup(bool ok, int exit_code, const std::string& message,
                                double timeout_s);

// The deadline of the agreement: DEEPTRAIN_STARTUP_TIMEOUT_S, else 120 s.
double startup_timeout_s();

}  // namespace deeptrain
