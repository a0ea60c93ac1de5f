// Argument checks shared by the binding classes: every pointer, shape and size
// that crosses from JS is validated here, and failures become JS errors (js_errors.h).
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "js_errors.h"

namespace evit {

template <typename T>
struct TypedArrayTraits;
template <>
struct TypedArrayTraits<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
};
template <>
struct TypedArrayTraits<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
};
template <>
struct TypedArrayTraits<uint8_t> {
  static constexpr napi_typedarray_type type = napi_uint8_array;
  static constexpr const char* name = "Uint8Array";
};

// The typed array's elements, checked for type and (when expected >= 0) length.
template <typename T>
Napi::TypedArrayOf<T> typedArrayArg(const Napi::Value& v, const std::string& what, int64_t expected = -1) {
  Napi::Env env = v.Env();
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayTraits<T>::type)
    throw typeError(env, what + " must be a " + TypedArrayTraits<T>::name);
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  if (expected >= 0 && (int64_t)arr.ElementLength() != expected)
    throw rangeError(env, what + " has " + std::to_string(arr.ElementLength()) + " elements, expected " +
                              std::to_string(expected));
  if (arr.ElementLength() > 0 && arr.Data() == nullptr)
    throw typeError(env, what + " has no backing store (detached?)");
  return arr;
}

inline int intArg(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  Napi::Env env = v.Env();
  if (!v.IsNumber()) throw typeError(env, what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  // Range first: casting NaN or a huge double to an integer is undefined behaviour.
  if (!(d >= (double)lo && d <= (double)hi) || d != std::floor(d))
    throw rangeError(env, what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                              "], got " + v.ToString().Utf8Value());
  return (int)d;
}

inline Napi::Value requireProp(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) throw typeError(o.Env(), what + "." + key + " is required");
  return v;
}

}  // namespace evit
