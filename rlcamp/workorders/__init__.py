"""Work orders: the launch scripts of ``examples/ppo_trainer`` as objects rlcamp can read, scale down
(``rlcamp smoke``) and size (``rlcamp plan``)."""
