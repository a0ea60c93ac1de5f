// The JSON both cost programs (deit_costs.cc, shunted_costs.cc) print per pass: the host/device
// copies and every launch's emulated counts, for bench/gpu-model/model.js.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "evit_simt/control.h"

inline std::string jsonString(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    o += ch;
  }
  return o + "\"";
}

// "copies":[...],"launches":[...]; opOf(lap) names the op and block of the launch that follows
// `lap` profile events (the pass is profiled: an event between ops).
template <class OpOf>
void printCopiesAndLaunches(const std::vector<evit_simt::CopyRecord>& copies,
                            const std::vector<evit_simt::LaunchRecord>& recs, OpOf opOf) {
  std::printf("\"copies\":[");
  for (size_t i = 0; i < copies.size(); ++i) {
    const auto& k = copies[i];
    const char* kind = k.kind == cudaMemcpyHostToDevice     ? "h2d"
                       : k.kind == cudaMemcpyDeviceToHost   ? "d2h"
                       : k.kind == cudaMemcpyDeviceToDevice ? "d2d"
                                                            : "h2h";
    std::printf("%s{\"kind\":\"%s\",\"bytes\":%zu,\"pinned\":%s}", i ? "," : "", kind, k.bytes,
                k.hostPinned ? "true" : "false");
  }
  std::printf("],\"launches\":[");
  const uint64_t e0 = recs.empty() ? 0 : recs[0].eventsBefore;
  for (size_t i = 0; i < recs.size(); ++i) {
    const auto& r = recs[i];
    const auto [op, block] = opOf((size_t)(r.eventsBefore - e0));
    std::printf(
        "%s\n{\"kernel\":%s,\"op\":\"%s\",\"block\":%d,\"grid\":[%u,%u,%u],\"threads\":[%u,%u,%u],\"smem\":%zu,"
        "\"graph\":%s,\"mma\":%llu,\"ldmatrix\":%llu,\"cpAsyncBytes\":%llu,\"readBytes\":%llu,\"writeBytes\":%llu,"
        "\"readSectors\":%llu,\"writeSectors\":%llu,\"readSpanSectors\":%llu,\"writeSpanSectors\":%llu,"
        "\"blockReadSectors\":%llu,\"blockWriteSectors\":%llu,"
        "\"blocksRun\":%llu,\"sampled\":%s,\"ok\":%s}",
        i ? "," : "", jsonString(r.kernel).c_str(), op.c_str(), block, r.grid.x, r.grid.y, r.grid.z, r.block.x,
        r.block.y, r.block.z, r.dynamicSmemBytes, r.fromGraph ? "true" : "false", (unsigned long long)r.mma,
        (unsigned long long)r.ldmatrix, (unsigned long long)r.cpAsyncBytes, (unsigned long long)r.globalReadBytes,
        (unsigned long long)r.globalWriteBytes, (unsigned long long)r.readSectors, (unsigned long long)r.writeSectors,
        (unsigned long long)r.readSpanSectors, (unsigned long long)r.writeSpanSectors,
        (unsigned long long)r.blockReadSectors, (unsigned long long)r.blockWriteSectors,
        (unsigned long long)r.blocksRun, r.sampled ? "true" : "false", r.result == cudaSuccess ? "true" : "false");
  }
  std::printf("]");
}
