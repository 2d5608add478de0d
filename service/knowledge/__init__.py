"""Knowledge bases behind grounded drafts: article sync, passages, retrieval, and similar earlier tickets."""
