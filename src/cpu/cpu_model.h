// The CPU backend: a prepared model that runs the whole forward pass of SPEC §1.
#pragma once

#include <memory>
#include <vector>

#include "../backend.h"
#include "../host_weights.h"

namespace evit::cpu {

class CpuModel : public PreparedModel {
 public:
  CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights);
  const ModelConfig& config() const override { return cfg_; }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  ModelConfig cfg_;
  std::shared_ptr<const HostWeights> weights_;
};

}  // namespace evit::cpu
