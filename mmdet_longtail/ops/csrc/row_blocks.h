// The parallel driver and the input checks shared by the CPU loss kernels
// over logits (N, K) with one target column per row.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace mmdet_longtail {

// logits: contiguous float32 (N, K) on the CPU; targets: contiguous int64
// (N,), one column per row (outside [0, K): none)
inline void check_logits_and_targets(const at::Tensor& logits,
                                     const at::Tensor& targets,
                                     const char* op) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat &&
                  logits.is_contiguous() && logits.device().is_cpu(),
              op, ": logits must be a contiguous float32 (N, K) CPU tensor");
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.is_contiguous() &&
                  targets.numel() == logits.size(0),
              op, ": the targets must be contiguous int64 (N,)");
}

// Runs rows(begin, end, partial) over blocks of rows in parallel, where
// partial points at the block's own zeroed (2, K) per-column sums (nullptr
// without with_sums), and returns the sums over the blocks (2, K) (an
// undefined tensor without with_sums). At most 256 blocks, fixed by N
// alone, so the sums do not depend on the number of threads.
template <typename RowsFn>
at::Tensor for_each_row_block(int64_t num_rows, int64_t num_columns,
                              bool with_sums,
                              const at::TensorOptions& options,
                              const RowsFn& rows) {
  const int64_t block_rows =
      std::max<int64_t>(64, (num_rows + 255) / 256);
  const int64_t num_blocks = (num_rows + block_rows - 1) / block_rows;
  at::Tensor partial_sums;
  float* partial_data = nullptr;
  if (with_sums) {
    partial_sums = at::zeros(
        {std::max<int64_t>(num_blocks, 1), 2, num_columns}, options);
    partial_data = partial_sums.data_ptr<float>();
  }
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t begin = block * block_rows;
      rows(begin, std::min(num_rows, begin + block_rows),
           with_sums ? partial_data + block * 2 * num_columns : nullptr);
    }
  });
  return with_sums ? partial_sums.sum(0) : at::Tensor();
}

}  // namespace mmdet_longtail
