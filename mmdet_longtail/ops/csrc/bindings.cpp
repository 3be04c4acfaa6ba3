// Python bindings of mmdet_longtail's CPU kernels (built on first use by
// mmdet_longtail/ops/cpu_kernels.py).
#include <torch/extension.h>

#include <vector>

namespace mmdet_longtail {
std::vector<at::Tensor> efl_forward_labels(
    const at::Tensor& logits, const at::Tensor& labels,
    const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& weighting, double alpha, double scale);
std::vector<at::Tensor> one_hot_bce_forward(
    const at::Tensor& logits, const at::Tensor& target_col,
    const at::Tensor& pos_weight, const at::Tensor& neg_weight,
    const at::Tensor& row_kind, double scale, bool with_statistics);
}  // namespace mmdet_longtail

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("efl_forward_labels", &mmdet_longtail::efl_forward_labels,
        "Equalized focal loss of (N, C) logits with (N,) labels: per-row "
        "loss, dl/dx, per-class gradient magnitudes (2, C), per-row logit "
        "sums");
  m.def("one_hot_bce_forward", &mmdet_longtail::one_hot_bce_forward,
        "Weighted sigmoid BCE with one-hot targets: per-row losses, the "
        "gradient, per-row logit sums and the per-column gradient "
        "magnitudes (2, K)");
}
