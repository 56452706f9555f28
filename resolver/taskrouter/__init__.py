"""TaskRouter: the REST client, merging media into task attributes, attaching links, the webhook signature."""
