// Checks for the emulator's native test programs: one "ok N - what" / "not ok N - what"
// line per check (the tape files turn each into an assertion), a summary, and the exit code.
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "evit_simt/control.h"

namespace harness {

inline int& checks() {
  static int n = 0;
  return n;
}
inline int& failures() {
  static int n = 0;
  return n;
}

inline bool check(bool ok, const std::string& what) {
  ++checks();
  if (!ok) ++failures();
  std::printf("%s %d - %s\n", ok ? "ok" : "not ok", checks(), what.c_str());
  return ok;
}

// The three schedules every emulated test runs under.
inline std::vector<evit_simt::Schedule> schedules() {
  return {{evit_simt::Schedule::Forward, 0}, {evit_simt::Schedule::Reverse, 0}, {evit_simt::Schedule::Random, 12345}};
}

template <class F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs `body`, then prints the summary; an escaped exception is one more failed check.
template <class F>
int main(F&& body) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line out before a crash
  try {
    body();
  } catch (const std::exception& e) {
    check(false, std::string("unexpected exception: ") + e.what());
  }
  std::printf("# %d checks, %d failed\n", checks(), failures());
  return failures() ? 1 : 0;
}

}  // namespace harness
