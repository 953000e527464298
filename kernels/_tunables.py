"""Every measured threshold and work-split size of numbanet's kernels, in one place.

Each value keeps the measurement that chose it and the command that
re-measures it. Two kinds:

* read by the Python wrappers (the convolution's strategy choice, its chunk
  counts, the convolution and pooling calling-thread thresholds and the
  pooling task size): a
  change takes effect on the next call;
* read inside ``@njit`` code (``CHUNK``, ``PARALLEL_MIN``,
  ``AFFINE_PARALLEL_MIN_MACS`` and the loss and batch-norm thresholds): Numba freezes a global into the compiled
  kernel, so the cached machine code holds the old value. This file is
  therefore in ``_config.DEPENDENCIES`` of every kernel file that imports it:
  editing it changes those kernels' cache freshness stamp and they recompile
  (``tests/test_startup.py::test_editing_a_tunable_makes_the_kernels_recompile``).

Kept elsewhere, each beside what it sizes:

* the GEMM's blocking, ``MR``/``NV``/``KC`` per ISA family in
  :data:`numbanet.kernels._gemm.TILES` (one entry per micro-kernel, next to
  its register budget; the tile names the cache files), and ``NC`` and
  ``A_IN_PLACE_MAX_N`` beside them; re-measure with ``numbanet-bench --cases 'gemm*,affine*,conv*'`` and
  check spills with ``_gemm.spill_report()``;
* process set-up, not kernel code: ``_threads.SPIN_COUNT`` (idle OpenMP
  workers) and ``_malloc.MMAP_THRESHOLD``/``TRIM_THRESHOLD`` (glibc malloc).

Changing a value changes speed only, never results beyond rounding order: the
determinism tests hold for any value (the chunk counts are fixed numbers, not
the thread count, for that reason).
"""

from __future__ import annotations

__all__ = [
    "DIRECT_MAX_CG", "GEMM_MIN_FG", "BACKWARD_GEMM_MIN_TAPS", "DX_TRANSPOSED_MIN_CG", "CONV_CHUNKS", "CONV_DIRECT_CHUNKS",
    "CONV_PARALLEL_MIN_MACS", "POOL_PARALLEL_MIN", "POOL_TASK_ELEMENTS",
    "CHUNK", "PARALLEL_MIN", "AFFINE_PARALLEL_MIN_MACS",
    "LOSS_PARALLEL_MIN", "LOSS_BACKWARD_PARALLEL_MIN", "BATCHNORM_PARALLEL_MIN", "BATCHNORM_COLUMNS",
]

# --- convolution: which strategy (kernels/conv.py: _use_direct) -------------------
#
# Re-measure: ``python -m numbanet.bench.conv_strategies [case ...]`` times
# both strategies forced (kernels.conv.forced_strategy) per case and pass,
# interleaved; ``numbanet-bench --cases 'conv*'`` for the choice as a whole.

#: Input channels per group up to which the wide-grid loops beat the GEMM
#: (measured: Cg=32, F=64 still about even, conv_mid's Cg=64 clearly not).
DIRECT_MAX_CG = 16

#: Filters per group from which the forward pass takes the GEMM even with few
#: input channels: with a full micro-kernel panel of filters it beat the direct
#: loops on every shape measured (MNIST's 1 -> 30 channels 5x5: 0.51 vs 0.72
#: ms; CIFAR's 3 -> 32: 0.58 vs 0.87 ms; the 8x8 digits: 0.068 vs 0.076 ms).
#: Depthwise convolution (one filter per group) stays direct: there the GEMM
#: was 2x slower forward and 15x slower backward.
GEMM_MIN_FG = 8

#: The backward pass's products have the Cg*KH*KW taps as their rows (dx's
#: columns, dw^T's rows), in panels of MR: with few taps the panels run part
#: empty (9 taps fill 9 of 16 rows with MR = 8), and small planes give each
#: product little to do. Measured with the AVX-512 tile on an AVX-512 machine
#: (2 threads, batch 100, 3x3 unless said, backward without dx, direct vs GEMM
#: ms; not re-measured with the AVX2 tile): 8x8 C=1 F=30 0.095 vs 0.151; 28x28
#: C=1 F=30 0.54 vs 0.82; 12x12 C=3 F=16 0.17 vs 0.24; 16x16 C=3 F=32 0.45 vs
#: 0.40; 32x32 C=3 F=32 1.61 vs 1.33; MNIST's 28x28 C=1 F=30 5x5 0.82 vs 0.78;
#: 8x8 C=8 F=16 0.22 vs 0.20; 16x16 C=16 F=32 1.9 vs 0.86 (with dx alike). So
#: the backward pass stays direct below this many taps, or below the second
#: figure with fewer output positions than the third.
BACKWARD_GEMM_MIN_TAPS = 16, 64, 256

#: Input channels per group from which the GEMM strategy's dx is the
#: transposed convolution, one product with Cg rows and K = Fg*KH*KW at
#: stride 1, one per stride phase with a column stride above 1
#: (kernels/_conv_gemm.py), instead of Cg*KH*KW rows with K = Fg plus the
#: col2im adds. Its rows come in micro-kernel panels of MR (6 with the AVX2
#: tile): with few channels the panels run mostly empty (Cg = 1: 1 of 6
#: rows; conv_mnist's backward took 2.3x as long, shared Zen 3). Measured
#: the transposed form ahead at Cg = 16 (the book's DeepConvNet 16 -> 16 on
#: 28x28, float64: dx 10.6 against 13.6 ms with the adds, 1 thread, thread
#: CPU of the two kernels' phases timed apart, runs minutes apart) and above
#: (conv_deep 128: 29 against 40 ms; conv_mid 64: 57 against 77 ms); the
#: crossover between 3 and 16 channels is not measured. Strided, per phase:
#: conv_strided (Cg = 64, stride 2) dx 3.3 against 4.1 ms (2 threads, Zen 5,
#: 2026-12-02); the strided crossover is not measured either.
#: Re-measure: ``python -m numbanet.bench.conv_strategies`` with this value
#: set to 1 and to a large number (read per call by kernels/conv.py).
DX_TRANSPOSED_MIN_CG = 12

# --- convolution: how the batch is split ------------------------------------------

#: Batch chunks of the GEMM strategy: the unit of parallel work over samples
#: and of the dw/db partial sums. A fixed number (not the thread count) so that
#: the summation order, hence the result, never depends on the threads.
CONV_CHUNKS = 8
#: The direct kernels' partial sums are small: more chunks balance the threads
#: better (also a fixed number, for the same reason).
CONV_DIRECT_CHUNKS = 16

# --- convolution and pooling: when to stay on the calling thread ------------------
#
# Read by the Python wrappers (kernels/conv.py: _serial; kernels/pool.py:
# _serial). Same bits either way: conv calls the same kernel with one thread
# (_threads.on_calling_thread), pooling computes each plane with the same
# code in a plain loop.

#: A convolution of fewer multiply-adds (forward: N*F*OH*OW*Cg*KH*KW; backward
#: twice that with dx) runs with one thread, as does one with a single task
#: (a batch of one). Why: the book's gradient checks make thousands of tiny
#: calls (ch07/gradient_check: 1 x 1 x 10 x 10 input, 10 filters 3x3, 5760
#: multiply-adds, 13 us process CPU per conv2d_forward op on Zen 3, mostly
#: fixed cost); a parallel region costs a few microseconds to start and join
#: on a quiet machine and far more when the other core is busy (on the
#: loaded shared 2-core Zen 3, load 7-8: 1156 us with the pool vs 182 us on
#: the calling thread for a batch of two, forward + backward). At 256K
#: multiply-adds the work itself is about 10 us, where a split starts to pay
#: on a quiet machine (an estimate, as for AFFINE_PARALLEL_MIN_MACS: the
#: 2-thread crossover could not be measured on the loaded machine, where the
#: pool lost at every size). Re-measure on a quiet machine: time
#: ``conv2d_forward`` + ``conv2d_backward`` at 2 threads with this value set
#: to 0 and to 2**62 (it is read on every call) for batches around it.
CONV_PARALLEL_MIN_MACS = 1 << 18

#: Pooling of fewer input elements (or of a single (n, c) plane) loops over
#: the planes on the calling thread: max pooling forward + backward costs
#: about 1 ns an element on one core (Zen 3), so below this a parallel region
#: costs as much as the work (ch07/gradient_check pools 1 x 10 x 8 x 8: 7.5
#: us process CPU per Pooling.forward on the calling thread). On the loaded
#: machine above the pool lost up to 1.7M elements (x of 100 x 30 x 24 x 24,
#: about even); (4, 30, 24, 24) took 2584 us with the pool, 1409 us without.
#: Re-measure as the convolution's threshold.
POOL_PARALLEL_MIN = 16384

#: Input elements per parallel pooling task (whole planes, at least one).
#: One task per plane cost about 0.5 us a task on one Zen 3 core: 100 x 64 x
#: 9 x 9 (DeepConvNet's last pool, 6400 planes) took 4.4 ms as 6400 tasks
#: and 1.3 ms as one loop (shared machine). 16384 elements make 80 tasks of
#: 100 x 16 x 28 x 28 and 32 of 100 x 64 x 9 x 9: enough to balance two
#: threads. TO MEASURE quietly: ``numbanet-bench --cases 'pool*,train_step_book*'``
#: at 2 threads with 4096, 16384 and 65536. Read by the Python wrapper.
POOL_TASK_ELEMENTS = 16384

# --- elementwise kernels (kernels/activation.py, kernels/optim.py) ----------------
#
# Read inside @njit code. Re-measure: ``python -m numbanet.bench.optim_bandwidth``
# (GB/s per step and size) and ``numbanet-bench --cases 'relu*,adam*,sgd*'``.

#: Elements per parallel task (64 KB of float32), each a contiguous loop LLVM
#: vectorises. Not measured on its own: PARALLEL_MIN was measured with it.
CHUNK = 16384

#: Arrays of fewer elements run on the calling thread. The steps are memory
#: bound, but a layer's weights often sit in the L3 cache (the book's
#: SimpleConvNet's 4320 x 100 Affine weights: 1.7 MB per array), where two
#: threads do go faster: with the pool's workers spinning briefly between
#: kernels (see _threads), splitting tensors from 128K elements (512 KB per
#: float32 array) took the adam_convnet update from 0.137 to 0.107 ms and its
#: flat-buffer form from 0.096 to 0.057 ms (numbanet-bench, 2 threads).
#: With the workers spinning longer (_threads.SPIN_COUNT 30000) the split
#: pays from 32K elements: 32768 against 131072, three alternations
#: (`numbanet-bench --no-torch --dtype both --cases
#: 'train_step_book*,adam_mlp100_flat,adam_convnet'`, Xeon), adam_mlp100_flat
#: (46500 elements) 0.030-0.031 against 0.036-0.037 ms float32 and
#: 0.075-0.078 against 0.102-0.104 ms float64, MultiLayerNetExtend float32
#: 0.92-0.94 against 0.95-0.98 ms (W1's 78400); the other cases within
#: their spread. Smaller tensors run on the calling thread, where waking the
#: pool would cost more than the loop. The activations use the same
#: threshold (not measured separately).
PARALLEL_MIN = 32768

# --- Affine (kernels/affine.py) ---------------------------------------------------

#: Below this many multiply-adds a product runs on the calling thread: waking
#: the pool costs more than it saves. Read inside @njit code (_matmul).
#: Lowered from 1 << 20 so that 100 x 100 x 100 products (the book's
#: MultiLayerNetExtend, 1M MACs) are split: its training step went from 5.4 to
#: 3.0 ms in float64 and 2.6 to 2.15 ms in float32 (gradient + SGD update,
#: batch 100, 2 threads, quiet Zen 3, mean of 200 steps, two runs each).
#: Re-measure: ``numbanet-bench --cases 'affine*'`` at 1 and 2 threads.
AFFINE_PARALLEL_MIN_MACS = 1 << 18

# --- softmax cross-entropy (kernels/loss.py) and batch norm (kernels/batchnorm.py) ---
#
# Read inside @njit code.

#: Below this many logits the kernels run on the calling thread. A parallel
#: region costs a few microseconds to start and join even with the pool
#: spinning (an estimate: not measured on a quiet machine), and far more when the other core is busy (1.2 ms instead of
#: 23 us for the book's 100 x 10 logits, measured on a loaded 2-core Zen 3);
#: the softmax costs about 6-12 ns a logit on one core (Zen 3, process CPU
#: time), so a split pays only from a few thousand logits up. The backward
#: pass is a tenth of that work per element. Re-measure with
#: ``numbanet-bench --cases 'softmax_ce*'`` at 1 and 2 threads.
LOSS_PARALLEL_MIN = 4096
LOSS_BACKWARD_PARALLEL_MIN = 32768

#: Below this many elements of x the kernels run on the calling thread: the
#: per-channel loops cost about 1-4 ns an element on one core (Zen 3, process
#: CPU time, x of 100 x 100 per feature), so a parallel region, a few
#: microseconds to start and join on a quiet machine and far more when the
#: other core is busy, pays only from a few thousand elements up (the book's
#: 100 x 100 hidden layers run serially). Re-measure with
#: ``numbanet-bench --cases 'train_step_book_multi*'`` at 1 and 2 threads.
BATCHNORM_PARALLEL_MIN = 16384

#: Columns of 2-D batch-norm input one task sums side by side (the parallel
#: loop's unit; no effect on results, each column is summed in row order
#: either way). 32 float64 accumulators are eight AVX2 vectors, and the
#: book's 100-wide hidden layers split into four tasks for two threads.
#: TO MEASURE quietly: ``numbanet-bench --cases 'batchnorm*,train_step_book_multi*'``
#: at 2 threads with 16, 32 and 64.
BATCHNORM_COLUMNS = 32
