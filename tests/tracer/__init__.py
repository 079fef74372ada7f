"""Tests of the recording side: recording, model families and adapters, config facts, sampling, interventions, branches, the budget, the GPU path."""
