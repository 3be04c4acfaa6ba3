// Weighted sigmoid cross-entropy with at most one positive per row (EQL,
// EQLv2): the per-row losses, the gradient and the per-column gradient
// magnitudes in one pass over the logits, on the CPU.
//
// The definition is eql_loss.py's (one_hot_bce_sums): with the target
// y_ij = [j == t_i] and the weight w_ij = pos_weight[j] at the target,
// neg_weight[k_i, j] elsewhere, times scale:
//
//     L_i   = sum_j w_ij (softplus(x_ij) - y_ij x_ij)
//     dL/dx = w_ij (sigmoid(x_ij) - y_ij)
//
// and, with statistics, sum_i |dL/dx| / scale per column over the targets
// and over the other elements. As in efl_cpu.cpp: one exp_u20 per logit,
// masks only in the vector that holds the target, and the per-column sums
// in fixed row blocks' (2, K) partial sums instead of a second pass.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "row_blocks.h"
#include "sigmoid_terms.h"

namespace mmdet_longtail {
namespace {

// Rows [begin, end); with kStatistics the block's gradient sums are added
// to pos_sums / neg_sums (K,).
template <bool kStatistics>
void one_hot_bce_rows(const float* logits, const int64_t* target_col,
                      const float* pos_weight, const float* neg_weight,
                      const int64_t* row_kind, float scale, int64_t begin,
                      int64_t end, int64_t num_columns, float* grad,
                      float* row_loss, float* row_logit_sum,
                      float* pos_sums, float* neg_sums) {
  constexpr int64_t kLanes = Vec::size();
  const Vec scale_vec(scale);
  for (int64_t i = begin; i < end; ++i) {
    const float* x_row = logits + i * num_columns;
    float* grad_row = grad + i * num_columns;
    const float* neg_weight_row =
        neg_weight + (row_kind ? row_kind[i] : 0) * num_columns;
    const int64_t target = target_col[i];
    const bool has_target = target >= 0 && target < num_columns;
    const int64_t target_start = has_target ? target / kLanes * kLanes : -1;
    Vec loss_acc(0.f), logit_acc(0.f);
    for (int64_t j = 0; j < num_columns; j += kLanes) {
      // the tail loads zero weights: no loss, no gradient there
      const int64_t count = std::min(kLanes, num_columns - j);
      const Vec x = Vec::loadu(x_row + j, count);
      Vec weight = Vec::loadu(neg_weight_row + j, count) * scale_vec;
      Vec softplus, sigmoid;
      softplus_and_sigmoid(x, softplus, sigmoid);
      Vec bce = softplus, grad_j, negative_grad;
      if (j == target_start) {
        const Vec is_target = lane_mask(j, target);
        weight = Vec::blendv(
            weight, Vec::loadu(pos_weight + j, count) * scale_vec, is_target);
        const Vec target_value = Vec::blendv(Vec(0.f), Vec(1.f), is_target);
        bce = softplus - target_value * x;
        grad_j = (sigmoid - target_value) * weight;
        negative_grad = Vec::blendv(grad_j, Vec(0.f), is_target);
      } else {
        grad_j = sigmoid * weight;
        negative_grad = grad_j;
      }
      grad_j.store(grad_row + j, count);
      if (kStatistics) {
        (Vec::loadu(neg_sums + j, count) + negative_grad)
            .store(neg_sums + j, count);
      }
      loss_acc = at::vec::fmadd(weight, bce, loss_acc);
      logit_acc = logit_acc + x;
    }
    // the gradient is <= 0 at the target
    if (kStatistics && has_target) pos_sums[target] -= grad_row[target];
    row_loss[i] = horizontal_sum(loss_acc);
    row_logit_sum[i] = horizontal_sum(logit_acc);
  }
}

}  // namespace

// Returns {per-row losses (N,), dL/dx (N, K), per-row logit sums (N,) (for
// the finiteness check), and with with_statistics the per-column gradient
// magnitudes of the un-scaled loss (2, K) = [over the targets; over the
// other elements]}. target_col outside [0, K) marks a row without target;
// row_kind is (N,) in [0, R) or empty (R = 1).
std::vector<at::Tensor> one_hot_bce_forward(
    const at::Tensor& logits, const at::Tensor& target_col,
    const at::Tensor& pos_weight, const at::Tensor& neg_weight,
    const at::Tensor& row_kind, double scale, bool with_statistics) {
  check_logits_and_targets(logits, target_col, "one_hot_bce_forward");
  const int64_t num = logits.size(0), num_columns = logits.size(1);
  TORCH_CHECK(pos_weight.scalar_type() == at::kFloat &&
                  pos_weight.is_contiguous() &&
                  pos_weight.numel() == num_columns,
              "one_hot_bce_forward: pos_weight must be float32 (K,)");
  TORCH_CHECK(neg_weight.dim() == 2 && neg_weight.size(1) == num_columns &&
                  neg_weight.scalar_type() == at::kFloat &&
                  neg_weight.is_contiguous(),
              "one_hot_bce_forward: neg_weight must be float32 (R, K)");
  TORCH_CHECK(scale > 0, "one_hot_bce_forward: scale must be > 0");
  const int64_t* kind_data = nullptr;
  if (row_kind.numel()) {
    TORCH_CHECK(row_kind.scalar_type() == at::kLong &&
                    row_kind.is_contiguous() && row_kind.numel() == num,
                "one_hot_bce_forward: row_kind must be contiguous int64 "
                "(N,)");
    kind_data = row_kind.data_ptr<int64_t>();
    const auto bounds = std::minmax_element(kind_data, kind_data + num);
    TORCH_CHECK(*bounds.first >= 0 && *bounds.second < neg_weight.size(0),
                "one_hot_bce_forward: row_kind must lie in [0, ",
                neg_weight.size(0), ")");
  } else {
    TORCH_CHECK(neg_weight.size(0) == 1,
                "one_hot_bce_forward: row_kind is required with several "
                "neg_weight rows");
  }
  at::Tensor grad = at::empty_like(logits);
  at::Tensor row_loss = at::empty({num}, logits.options());
  at::Tensor row_logit_sum = at::empty({num}, logits.options());
  const float* logits_data = logits.data_ptr<float>();
  const int64_t* target_data = target_col.data_ptr<int64_t>();
  const float* pos_data = pos_weight.data_ptr<float>();
  const float* neg_data = neg_weight.data_ptr<float>();
  float* grad_data = grad.data_ptr<float>();
  float* row_loss_data = row_loss.data_ptr<float>();
  float* row_logit_data = row_logit_sum.data_ptr<float>();
  at::Tensor statistics = for_each_row_block(
      num, num_columns, with_statistics, logits.options(),
      [&](int64_t begin, int64_t end, float* pos_sums) {
        if (pos_sums) {
          one_hot_bce_rows<true>(
              logits_data, target_data, pos_data, neg_data, kind_data,
              static_cast<float>(scale), begin, end, num_columns, grad_data,
              row_loss_data, row_logit_data, pos_sums,
              pos_sums + num_columns);
        } else {
          one_hot_bce_rows<false>(
              logits_data, target_data, pos_data, neg_data, kind_data,
              static_cast<float>(scale), begin, end, num_columns, grad_data,
              row_loss_data, row_logit_data, nullptr, nullptr);
        }
      });
  if (!with_statistics) return {row_loss, grad, row_logit_sum};
  return {row_loss, grad, row_logit_sum, statistics.mul_(1.0 / scale)};
}

}  // namespace mmdet_longtail
