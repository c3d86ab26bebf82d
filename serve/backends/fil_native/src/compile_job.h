// A background compilation of one model, as the Python backend does it in a thread: the
// compiler is Python's (tl2cgen + gcc, fil_forest.compile_model), so it runs as a child
// process `<python> fil_compile.py ...`, never in the request path. When it finishes, the
// callback gets the library path (or why there is none); the backend then self-checks the
// library and swaps it in. Cancel() (model unload) stops the child and waits for the thread.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace fil {

struct CompileResult {
  std::string library;     // the compiled library; empty on failure
  std::string error;       // why not, with the end of the helper's output
  bool compiler_missing = false;
  bool cancelled = false;
};

class CompileJob {
 public:
  // argv: the full command (argv[0] is looked up on PATH when it has no slash).
  CompileJob(std::vector<std::string> argv, std::function<void(const CompileResult&)> done);
  ~CompileJob();  // cancels and joins
  void Cancel();

 private:
  void Run();
  void RunHelper();
  std::vector<std::string> argv_;
  std::function<void(const CompileResult&)> done_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> pid_{-1};
  std::thread thread_;
};

}  // namespace fil
