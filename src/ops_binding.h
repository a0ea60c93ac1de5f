// Synchronous exports of single CPU ops, so tests can check each against a naive reference.
#pragma once

#include <napi.h>

namespace evit {
Napi::Object DefineOps(Napi::Env env);
}
