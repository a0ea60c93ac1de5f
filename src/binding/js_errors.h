// The errors the binding gives JavaScript. Each carries a string `code`: EVIT_NATIVE_ARGUMENT
// for arguments it refuses (TypeScript validates user input first, so this means direct use
// of the binding, or a bug), EVIT_NATIVE for a backend that failed. lib/native turns either
// into one NativeError with the message unchanged. EVIT_BAD_INPUT is the one user-input check
// the binding owns: non-finite values in an input batch, found while it copies the batch.
#pragma once

#include <napi.h>

#include <string>

namespace evit {

inline constexpr const char* kArgumentCode = "EVIT_NATIVE_ARGUMENT";
inline constexpr const char* kFailureCode = "EVIT_NATIVE";
inline constexpr const char* kBadInputCode = "EVIT_BAD_INPUT";

template <class E>
Napi::Error withCode(E e, const char* code) {
  e.Set("code", Napi::String::New(e.Env(), code));
  return e;
}

inline Napi::Error typeError(Napi::Env env, const std::string& message) {
  return withCode(Napi::TypeError::New(env, message), kArgumentCode);
}
inline Napi::Error rangeError(Napi::Env env, const std::string& message) {
  return withCode(Napi::RangeError::New(env, message), kArgumentCode);
}
inline Napi::Error nativeFailure(Napi::Env env, const std::string& message) {
  return withCode(Napi::Error::New(env, message), kFailureCode);
}
inline Napi::Error badInput(Napi::Env env, const std::string& message) {
  return withCode(Napi::RangeError::New(env, message), kBadInputCode);
}

}  // namespace evit
