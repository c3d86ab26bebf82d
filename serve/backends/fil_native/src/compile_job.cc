// See compile_job.h. The helper prints "LIBRARY <path>" when it has a library and exits 3
// when there is no C compiler (fil_compile.py).
#include "compile_job.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

extern char** environ;

namespace fil {

constexpr int kExitCompilerMissing = 3;  // fil_compile.EXIT_COMPILER_MISSING

// At most one helper per core at a time: a repository of many models loads them all at
// once, and each helper runs its own compiler jobs. The others wait for a slot.
class Slots {
 public:
  bool Acquire(const std::atomic<bool>& cancel) {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned limit = std::max(1u, std::thread::hardware_concurrency());
    while (running_ >= limit) {
      if (cancel) return false;
      freed_.wait_for(lock, std::chrono::milliseconds(200));
    }
    ++running_;
    return true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mutex_);
    --running_;
    freed_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable freed_;
  unsigned running_ = 0;
};

static Slots& HelperSlots() {
  static Slots slots;
  return slots;
}

CompileJob::CompileJob(std::vector<std::string> argv, std::function<void(const CompileResult&)> done)
    : argv_(std::move(argv)), done_(std::move(done)) {
  thread_ = std::thread([this] { Run(); });
}

CompileJob::~CompileJob() { Cancel(); }

void CompileJob::Cancel() {
  cancel_ = true;
  int pid = pid_.load();
  if (pid > 0) kill(pid, SIGTERM);  // the helper cancels its compiler children and cleans up
  if (thread_.joinable()) thread_.join();
}

static std::string Tail(const std::string& text, size_t n = 2000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

void CompileJob::Run() {
  if (!HelperSlots().Acquire(cancel_)) {
    CompileResult cancelled;
    cancelled.cancelled = true;
    done_(cancelled);
    return;
  }
  RunHelper();
  HelperSlots().Release();
}

void CompileJob::RunHelper() {
  CompileResult result;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    result.error = std::string("pipe failed: ") + std::strerror(errno);
    done_(result);
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // its own process group (killed as one if need be), no signal blocked or ignored that the
  // server's thread had: SIGTERM must reach the helper
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = cancel_ ? ECANCELED : posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    result.cancelled = cancel_;
    result.error = std::string("cannot start ") + argv_[0] + ": " + std::strerror(rc);
    done_(result);
    return;
  }
  pid_ = pid;
  if (cancel_) kill(pid, SIGTERM);  // Cancel() ran between the spawn and pid_ being set

  std::string output;
  auto term_sent = std::chrono::steady_clock::time_point::max();
  bool killed = false;
  char buf[4096];
  for (;;) {
    if (cancel_ && term_sent == std::chrono::steady_clock::time_point::max()) {
      kill(pid, SIGTERM);
      term_sent = std::chrono::steady_clock::now();
    }
    if (!killed && std::chrono::steady_clock::now() - term_sent > std::chrono::seconds(10)) {
      killpg(pid, SIGKILL);  // the helper did not stop in time: it and its compilers
      killed = true;
    }
    pollfd p{out[0], POLLIN, 0};
    int ready = poll(&p, 1, 200);
    if (ready > 0) {
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;  // EOF: the helper (and every child holding the pipe) exited
      output.append(buf, static_cast<size_t>(n));
      if (output.size() > (1 << 20)) output.erase(0, output.size() - (1 << 19));
    } else if (ready < 0 && errno != EINTR) {
      break;
    }
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  pid_ = -1;

  result.cancelled = cancel_;
  auto marker = output.rfind("LIBRARY ");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && marker != std::string::npos) {
    auto end = output.find('\n', marker);
    result.library = output.substr(marker + 8, end == std::string::npos ? std::string::npos : end - marker - 8);
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kExitCompilerMissing) {
    result.compiler_missing = true;
    auto first = output.find_last_not_of("\n");
    result.error = output.substr(0, first == std::string::npos ? 0 : first + 1);
  } else {
    std::string how = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                          : "exit code " + std::to_string(WEXITSTATUS(status));
    result.error = "the compile helper failed (" + how + "):\n" + Tail(output);
  }
  done_(result);
}

}  // namespace fil
