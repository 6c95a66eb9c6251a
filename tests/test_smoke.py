import torch

import gradvet


def test_check_runs_and_reports_layers_in_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    report = gradvet.check(model, (torch.randn(16, 4), torch.randint(0, 2, (16,))), torch.nn.functional.cross_entropy)
    assert [layer.name for layer in report.layers] == ["0", "1", "2"]
    assert report.layers[1].activation == "tanh"
