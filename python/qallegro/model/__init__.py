"""qallegro.model"""
