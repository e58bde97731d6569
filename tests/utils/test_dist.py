import torch

def test_size_based_units_group_modules_by_parameter_count():
    from rlcamp.utils.dist import size_based_units

    class Block(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.a, self.b = torch.nn.Linear(n, n, bias=False), torch.nn.Linear(n, n, bias=False)

    model = torch.nn.Sequential(Block(10), Block(10), torch.nn.Linear(3, 3, bias=False))
    # each Linear has 100 parameters: at 150 a Block (200) is the first module big enough; the 9 left go to the root
    assert size_based_units(model, 150) == [model[0], model[1]]
    assert size_based_units(model, 100) == [model[0].a, model[0].b, model[1].a, model[1].b]
    assert size_based_units(model, 1000) == []


def test_a_tied_weight_stays_with_all_its_uses():
    from rlcamp.utils.dist import size_based_units

    embed, body = torch.nn.Embedding(10, 10), torch.nn.Linear(10, 10, bias=False)
    head = torch.nn.Linear(10, 10, bias=False)
    head.weight = embed.weight  # tied, as in most small LMs
    model = torch.nn.Sequential(torch.nn.Sequential(embed, body), head)
    assert size_based_units(model, 50) == [body]  # neither the embedding nor its parent: the root holds the tie
