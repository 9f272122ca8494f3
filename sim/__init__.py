"""striate.sim"""
