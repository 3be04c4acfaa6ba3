// Equalized Focal Loss (Li et al., CVPR 2022) of logits (N, C) with one
// label per anchor: the loss, its derivative and the per-class gradient
// magnitudes in one pass over the logits, on the CPU.
//
// The definition is efl_loss.py's (efl_terms / efl_dense); with the signed
// logit z = x for a negative target and -x for the positive one,
// q = sigmoid(z), softplus(z) = -log p_t and c = alpha_t * weighting_j *
// scale * w_i:
//
//     l     = c q^gamma_j softplus(z)
//     dl/dz = c q^gamma_j (gamma_j (1 - q) softplus(z) + q)
//     dl/dx = dl/dz for a negative target, -dl/dz for the positive one
//
// with e = exp(-|x|), q from 1 / (1 + e), softplus(z) = max(z, 0) +
// log1p(e) by sigmoid_terms.py's atanh series and q^gamma =
// exp(gamma (z - softplus(z))).
//
// Why not the torch.compile kernel on a CPU: that one spends most of its
// time in two 1-ulp exps per logit and makes a second pass over the
// derivative for the per-class sums. Here
//   * both exps are ATen's exp_u20 (at most 20 ulp, ~1e-6 relative; loss,
//     gradient and statistics stay within 2e-5 relative of the float64
//     definition, tests/test_ops/test_cpu_kernels.py);
//   * a row has at most one positive target: every vector but the one that
//     holds the label is evaluated as negatives, without masks;
//   * the per-class sums accumulate, while the row is in registers, into a
//     row block's own (2, C) partial sums, which stay in cache; the blocks
//     are fixed by N alone, so the sums do not depend on the thread count.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "row_blocks.h"
#include "sigmoid_terms.h"

namespace mmdet_longtail {
namespace {

// Loss and dl/dx of one vector of logits. kHasPositive: some lane holds the
// positive target (is_positive all-ones there); otherwise every lane is a
// negative target and the masks are skipped.
template <bool kHasPositive>
inline void efl_vector(const Vec& x, const Vec& gamma, const Vec& coef,
                       const Vec& is_positive, Vec& loss, Vec& grad) {
  const Vec z = kHasPositive ? Vec::blendv(x, x.neg(), is_positive) : x;
  Vec nll, q;
  softplus_and_sigmoid(z, nll, q);
  const Vec modulated = coef * (gamma * (z - nll)).exp_u20();
  loss = modulated * nll;
  const Vec dz =
      modulated * at::vec::fmadd(gamma * (Vec(1.f) - q), nll, q);
  grad = kHasPositive ? Vec::blendv(dz, dz.neg(), is_positive) : dz;
}

// Rows [begin, end): derivative and per-row sums written in place; the
// block's gradient magnitudes added to neg_sums / pos_sums (C,).
void efl_rows(const float* logits, const int64_t* labels, const float* weight,
              const float* gamma, const float* weighting, float alpha,
              float scale, int64_t begin, int64_t end, int64_t num_classes,
              float* grad, float* row_loss, float* row_logit_sum,
              float* neg_sums, float* pos_sums) {
  constexpr int64_t kLanes = Vec::size();
  const float neg_scale = (1.f - alpha) * scale;
  const float pos_scale = alpha * scale;
  for (int64_t i = begin; i < end; ++i) {
    const float* x_row = logits + i * num_classes;
    float* grad_row = grad + i * num_classes;
    const int64_t label = labels[i];
    const bool has_label = label >= 0 && label < num_classes;
    const int64_t label_start = has_label ? label / kLanes * kLanes : -1;
    const float row_weight = weight ? weight[i] : 1.f;
    const Vec neg_coef(neg_scale * row_weight);
    const Vec pos_coef(pos_scale * row_weight);
    Vec loss_acc(0.f), logit_acc(0.f);
    for (int64_t j = 0; j < num_classes; j += kLanes) {
      // the tail loads zeros, so weighting = 0 there: no loss, no gradient
      const int64_t count = std::min(kLanes, num_classes - j);
      const Vec x = Vec::loadu(x_row + j, count);
      const Vec gamma_j = Vec::loadu(gamma + j, count);
      const Vec weighting_j = Vec::loadu(weighting + j, count);
      Vec loss, grad_j, negative_grad;
      if (j == label_start) {
        const Vec is_positive = lane_mask(j, label);
        const Vec coef =
            weighting_j * Vec::blendv(neg_coef, pos_coef, is_positive);
        efl_vector<true>(x, gamma_j, coef, is_positive, loss, grad_j);
        negative_grad = Vec::blendv(grad_j, Vec(0.f), is_positive);
      } else {
        efl_vector<false>(x, gamma_j, weighting_j * neg_coef, Vec(0.f),
                          loss, grad_j);
        negative_grad = grad_j;
      }
      grad_j.store(grad_row + j, count);
      (Vec::loadu(neg_sums + j, count) + negative_grad)
          .store(neg_sums + j, count);
      loss_acc = loss_acc + loss;
      logit_acc = logit_acc + x;
    }
    if (has_label) pos_sums[label] -= grad_row[label];  // dl/dx <= 0 there
    row_loss[i] = horizontal_sum(loss_acc);
    row_logit_sum[i] = horizontal_sum(logit_acc);
  }
}

}  // namespace

// Returns {per-row loss (N,), dl/dx (N, C), per-class gradient magnitudes
// (2, C) = [over the positive targets; over the negative ones], per-row
// logit sums (N,) (finite exactly when the row is, for the finiteness
// check)}. labels outside [0, C) (background) mark no positive target;
// weight is (N,) or empty (all ones).
std::vector<at::Tensor> efl_forward_labels(
    const at::Tensor& logits, const at::Tensor& labels,
    const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& weighting, double alpha, double scale) {
  check_logits_and_targets(logits, labels, "efl_forward_labels");
  const int64_t num = logits.size(0), num_classes = logits.size(1);
  TORCH_CHECK(weight.numel() == 0 ||
                  (weight.scalar_type() == at::kFloat &&
                   weight.is_contiguous() && weight.numel() == num),
              "efl_forward_labels: weight must be empty or float32 (N,)");
  for (const at::Tensor* per_class : {&gamma, &weighting}) {
    TORCH_CHECK(per_class->scalar_type() == at::kFloat &&
                    per_class->is_contiguous() &&
                    per_class->numel() == num_classes,
                "efl_forward_labels: gamma and weighting must be float32 "
                "(C,)");
  }
  at::Tensor grad = at::empty_like(logits);
  at::Tensor row_loss = at::empty({num}, logits.options());
  at::Tensor row_logit_sum = at::empty({num}, logits.options());
  const float* logits_data = logits.data_ptr<float>();
  const int64_t* label_data = labels.data_ptr<int64_t>();
  const float* weight_data =
      weight.numel() ? weight.data_ptr<float>() : nullptr;
  const float* gamma_data = gamma.data_ptr<float>();
  const float* weighting_data = weighting.data_ptr<float>();
  float* grad_data = grad.data_ptr<float>();
  float* row_loss_data = row_loss.data_ptr<float>();
  float* row_logit_data = row_logit_sum.data_ptr<float>();
  at::Tensor statistics = for_each_row_block(
      num, num_classes, /*with_sums=*/true, logits.options(),
      [&](int64_t begin, int64_t end, float* pos_sums) {
        efl_rows(logits_data, label_data, weight_data, gamma_data,
                 weighting_data, static_cast<float>(alpha),
                 static_cast<float>(scale), begin, end, num_classes,
                 grad_data, row_loss_data, row_logit_data,
                 pos_sums + num_classes, pos_sums);
      });
  return {row_loss, grad, statistics, row_logit_sum};
}

}  // namespace mmdet_longtail
