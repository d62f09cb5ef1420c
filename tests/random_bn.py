"""A test helper (imported by test_export.py and test_checkpoint.py): seeded non-trivial BatchNorm state."""
import torch


def randomized(model):
    """`model` in eval mode with non-trivial BatchNorm statistics and affine parameters (and Linear weights), so
    folding errors would show; seeded."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=0.1, generator=g)
    return model.eval()
