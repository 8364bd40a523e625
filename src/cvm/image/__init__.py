"""The owner's tools: keys, signing, image build and measurement prediction."""
