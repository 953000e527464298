"""Optimizer steps, plain NumPy: the textbook formula, one array operation at
a time (each makes a full pass over memory), updating ``param`` and the state
in place. Python-float scalars keep float32 arrays float32 (NEP 50). The
operation order follows PyTorch's single-tensor implementations."""

import math

import numpy as np


def _lerp_(start, end, weight):
    """``start <- lerp(start, end, weight)`` the way PyTorch rounds it."""
    w = start.dtype.type(weight)
    if abs(w) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (1 - w)


def sgd_step(param, grad, momentum_buffer=None, *, lr=0.01, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, first_step=False):
    """SGD: ``d = g + wd*p``; ``b = d`` (first) or ``momentum*b + (1-dampening)*d``;
    ``d = d + momentum*b`` (Nesterov) or ``b``; ``p -= lr*d``."""
    d = grad
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = d
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * d


def sgd_step_foreach(params, grads, momentum_buffers=None, *, lr=0.01, momentum=0.0, dampening=0.0,
                     nesterov=False, weight_decay=0.0, first_step=False):
    """:func:`sgd_step` on each entry of the lists, in order."""
    bufs = momentum_buffers if momentum != 0 else [None] * len(params)
    for p, g, b in zip(params, grads, bufs):
        sgd_step(p, g, b, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                 weight_decay=weight_decay, first_step=first_step)


def adagrad_step(param, grad, state_sum, *, step, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0):
    """AdaGrad: ``s += d**2``; ``p -= lr_t * d / (sqrt(s) + eps)``."""
    d = grad
    if weight_decay != 0:
        d = d + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += d * d
    std = np.sqrt(state_sum) + eps
    param += -clr * d / std


def adagrad_step_foreach(params, grads, state_sums, *, step, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0):
    """:func:`adagrad_step` on each entry of the lists, in order."""
    for p, g, s in zip(params, grads, state_sums):
        adagrad_step(p, g, s, step=step, lr=lr, eps=eps, weight_decay=weight_decay, lr_decay=lr_decay)


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    """RMSprop: ``v = alpha*v + (1-alpha)*d**2``; ``avg = sqrt(v [- gbar**2]) + eps``;
    ``p -= lr * d / avg`` (or through the momentum buffer)."""
    d = grad
    if weight_decay != 0:
        d = d + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * d * d
    if centered:
        _lerp_(grad_avg, d, 1 - alpha)
        avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += d / avg
        param += -lr * momentum_buffer
    else:
        param += -lr * d / avg


def rmsprop_step_foreach(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=0.01,
                         alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    """:func:`rmsprop_step` on each entry of the lists, in order."""
    n = len(params)
    gavgs = grad_avgs if centered else [None] * n
    bufs = momentum_buffers if momentum > 0 else [None] * n
    for p, g, sq, ga, b in zip(params, grads, square_avgs, gavgs, bufs):
        rmsprop_step(p, g, sq, ga, b, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                     centered=centered)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False):
    """Adam (L2 weight decay) or, with ``decoupled_weight_decay``, AdamW."""
    d = grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    _lerp_(exp_avg, d, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * d * d
    step_size = lr / (1 - beta1**step)
    bc2_sqrt = math.sqrt(1 - beta2**step)
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / bc2_sqrt + eps
    param += -step_size * exp_avg / denom


def adam_step_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=0.001, beta1=0.9,
                      beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False):
    """:func:`adam_step` on each entry of the lists, in order."""
    maxes = max_exp_avg_sqs if amsgrad else [None] * len(params)
    for p, g, m, sq, vmax in zip(params, grads, exp_avgs, exp_avg_sqs, maxes):
        adam_step(p, g, m, sq, vmax, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                  weight_decay=weight_decay, amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay)


def adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001, beta1=0.9,
               beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=False):
    """AdamW: Adam with decoupled weight decay ``p *= 1 - lr*wd``."""
    adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
              eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, decoupled_weight_decay=True)


def all_finite(a):
    """Whether every element of ``a`` is finite."""
    return bool(np.isfinite(a).all())


# --- the book's variants ("Deep Learning from Scratch") ----------------------------
# Whole-array expressions in the order the book writes its formulas, so float64
# results are the book's bit for bit.


def book_momentum_step(param, grad, velocity, *, lr=0.01, momentum=0.9):
    """The book's momentum: ``v = momentum*v - lr*g``; ``p += v``."""
    velocity[...] = momentum * velocity - lr * grad
    param += velocity


def book_nesterov_step(param, grad, velocity, *, lr=0.01, momentum=0.9):
    """The book's Nesterov: ``p += momentum**2 * v - (1+momentum)*lr*g`` (as
    two in-place updates); then ``v = v*momentum - lr*g``."""
    param += (momentum * momentum) * velocity
    param -= ((1 + momentum) * lr) * grad
    velocity *= momentum
    velocity -= lr * grad


def book_adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    """The book's Adam: ``m += (1-beta1)*(g - m)``; ``v += (1-beta2)*(g**2 - v)``;
    ``p -= lr_t*m / (sqrt(v) + eps)`` with
    ``lr_t = lr*sqrt(1 - beta2**step) / (1 - beta1**step)`` in float64."""
    lr_t = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq += (1 - beta2) * (grad * grad - exp_avg_sq)
    param -= lr_t * exp_avg / (np.sqrt(exp_avg_sq) + eps)


def book_momentum_step_foreach(params, grads, velocities, *, lr=0.01, momentum=0.9):
    """:func:`book_momentum_step` on each entry of the lists, in order."""
    for p, g, vel in zip(params, grads, velocities):
        book_momentum_step(p, g, vel, lr=lr, momentum=momentum)


def book_nesterov_step_foreach(params, grads, velocities, *, lr=0.01, momentum=0.9):
    """:func:`book_nesterov_step` on each entry of the lists, in order."""
    for p, g, vel in zip(params, grads, velocities):
        book_nesterov_step(p, g, vel, lr=lr, momentum=momentum)


def book_adam_step_foreach(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=0.001, beta1=0.9, beta2=0.999,
                           eps=1e-7):
    """:func:`book_adam_step` on each entry of the lists, in order."""
    for p, g, m, sq in zip(params, grads, exp_avgs, exp_avg_sqs):
        book_adam_step(p, g, m, sq, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
